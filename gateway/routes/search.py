"""Routes to tickets' search: the caller's tenant's tickets found by their words."""

from __future__ import annotations

import uuid

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import api, json_response, read_query
from gateway.pagination import encode_cursor, page_params
from gateway.route import STAFF
from gateway.routes.base import Routes, utc
from kernel.errors import ValidationFailed


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
        cursor = (
            encode_cursor({"matched": int(following[0]), "after": f"{following[1]}|{following[2]}"})
            if following
            else None
        )
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
    limit, cursor = page_params(request.args)
    if not cursor:
        return limit, None
    matched = cursor.get("matched")
    created_at, _, row_id = str(cursor.get("after", "")).partition("|")
    moment = utc(created_at)
    try:
        row = uuid.UUID(row_id)
    except ValueError:
        moment = None
    if not isinstance(matched, int) or isinstance(matched, bool) or matched < 1 or moment is None:
        raise ValidationFailed({"cursor": ["not a cursor this search gave out"]})
    # Re-rendered, not passed on: Python reads forms PostgreSQL would refuse.
    return limit, [str(matched), moment.isoformat(), str(row)]
