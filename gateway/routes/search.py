"""Routes to tickets' search: the caller's tenant's tickets found by their words."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import api, json_response, read_query
from gateway.pagination import page_params, read_search, search_cursor
from gateway.route import STAFF
from gateway.routes.base import Routes


class SearchRoutes(Routes):
    """Mixed into the gateway service: what tickets' search answers."""

    @api(
        "GET",
        "/v1/search",
        roles=STAFF,
        summary="Find tickets by the words of their subjects, bodies and messages (internal"
        " notes too, for staff who may read them); more words matched first, then the newest",
        response="SearchResultsOut",
        errors=(422,),
        listed=True,
        paging="search",
        query="SearchTicketsV1",
    )
    def search_tickets(self, request: Request) -> Response:
        caller = self._caller(request)
        # The query goes to tickets and nowhere else: the access record names the route and
        # the ids of the answer, never the URL's query (gateway.http).
        query = read_query(request, schemas.SearchTicketsV1())
        limit, after = _position(request)
        result = self.tickets.search_tickets(caller, query, limit, after)
        following = result["next"]
        cursor = search_cursor(*following) if following else None
        return json_response(
            200,
            {
                "items": result["items"],
                "next_cursor": cursor,
                "terms_left_out": result["terms_left_out"],
            },
        )


def _position(request: Request) -> tuple[int, list | None]:
    """``limit``, and the keyset position ``[matched, created_at, id]`` a search's cursor
    carries: the last ticket of the page before, in the search's order."""
    limit, cursor = page_params(request.args, "search")
    return limit, read_search(cursor) if cursor else None
