"""Routes to accounts: sign-up, the caller and their tenant, agents and their API keys,
contacts and their consent, and the policy versions agents accept.
"""

from __future__ import annotations

from collections.abc import Callable

from werkzeug.wrappers import Request, Response

from gateway import credentials, schemas
from gateway.http import IDENTITY, RESOURCES, api, json_response, read_json, read_query
from gateway.pagination import order_of
from gateway.route import ADMIN, ANYONE, STAFF
from gateway.routes.base import Routes, etag, if_match
from kernel.errors import Conflict, NotFound


class AccountRoutes(Routes):
    """Mixed into the gateway service: what accounts answers.

    A route that issues or ends a credential applies the change to the gateway's credentials
    (``gateway.credentials``) before it answers: from then on no gateway process accepts a key
    it ended, and a key it issued works at once."""

    def _tenant_changed(self, tenant: dict) -> dict:
        state = tenant.pop("credential")
        self.credentials.change(
            credentials.tenant_state,
            state["tenant_id"],
            state["tenant_status"],
            state["tenant_version"],
        )
        return tenant

    def _tenant_changing(self, caller: dict, change: Callable[[dict], dict]) -> dict:
        """The tenant as ``change`` left it, its new state in force here before the answer.
        A 409 (cancelled already, say, by a first request whose write here failed) brings the
        tenant's state as accounts has it here too, then the same answer."""
        try:
            return self._tenant_changed(change(caller))
        except Conflict:
            credential = self.accounts.credential(caller["key_id"])
            if credential is not None:
                self.credentials.change(
                    credentials.tenant_state,
                    credential["tenant_id"],
                    credential["tenant_status"],
                    credential["tenant_version"],
                )
            raise

    @api(
        "POST",
        "/v1/signup",
        summary="Sign up a tenant with its first admin",
        status=201,
        response="SignUpOut",
        body="SignUpV1",
        errors=(400, 413, 422, 429, 503),
        idempotent=True,
    )
    def sign_up(self, request: Request) -> Response:
        # Per client address, before the body is read: a sign-up creates a tenant and its keys.
        self.limits.sign_up(request)
        command = read_json(request, schemas.SignUpV1())

        def produce() -> Response:
            created = self.accounts.sign_up(command)
            self.credentials.change(credentials.learn, created.pop("credential"))
            request.environ[IDENTITY] = {
                "tenant_id": created["tenant"]["id"],
                "agent_id": created["agent"]["id"],
            }
            request.environ[RESOURCES] = [created["tenant"]["id"], created["agent"]["id"]]
            return json_response(201, created)

        return self._idempotent(request, "signup", produce)

    @api(
        "GET",
        "/v1/me",
        roles=ANYONE,
        summary=(
            "Who the key belongs to: agent, tenant and role, whether the key is the agent's own,"
            " and whether the agent's acceptance of the current policy version is pending"
        ),
        response="MeOut",
        errors=(503,),
    )
    def me(self, request: Request) -> Response:
        """Who the key belongs to, so a client (the console) can offer what the role may do,
        and whether they still owe an acceptance of the current policy (accounts knows)."""
        caller = self._caller(request)
        return json_response(
            200,
            {
                **{k: caller[k] for k in ("agent_id", "tenant_id", "role", "key_id")},
                "key_is_own": caller.get("key_issuer_id") == caller["agent_id"],
                **self.accounts.policy_status(caller["tenant_id"], caller["agent_id"]),
            },
        )

    @api(
        "POST",
        "/v1/me/api-keys",
        roles=ANYONE,
        summary="Claim a key of your own: it answers to you alone, and every key you held ends",
        status=201,
        response="ClaimedApiKeyOut",
    )
    def claim_api_key(self, request: Request) -> Response:
        """A key of the caller's own in place of all they hold. Not replayable by an
        Idempotency-Key: the calling key ends with the call, so a retry cannot authenticate."""
        caller = self._caller(request)
        claimed = self.accounts.claim_api_key(caller)
        self.credentials.change(
            _claimed, caller, claimed["revoked_key_ids"], claimed.pop("credential")
        )
        request.environ[RESOURCES] = [caller["agent_id"]]
        return json_response(201, claimed)

    @api(
        "GET",
        "/v1/tenant",
        roles=ANYONE,
        while_cancelled=True,
        summary="The caller's tenant (also while cancelled)",
        response="TenantOut",
    )
    def get_tenant(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.get_tenant(caller["tenant_id"]))

    @api(
        "DELETE",
        "/v1/tenant",
        roles=ADMIN,
        summary="Cancel the tenant; destroyed after the grace period",
        status=202,
        response="TenantOut",
        errors=(409,),
    )
    def cancel_tenant(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(202, self._tenant_changing(caller, self.accounts.cancel_tenant))

    @api(
        "POST",
        "/v1/tenant/reactivate",
        roles=ADMIN,
        while_cancelled=True,
        summary="Reactivate a cancelled tenant during its grace",
        response="TenantOut",
        errors=(409, 422),
        idempotent=True,
    )
    def reactivate_tenant(self, request: Request) -> Response:
        caller = self._caller(request)
        return self._idempotent(
            request,
            caller["tenant_id"],
            lambda: json_response(
                200, self._tenant_changing(caller, self.accounts.reactivate_tenant)
            ),
        )

    @api(
        "POST",
        "/v1/agents",
        roles=ADMIN,
        summary="Create an agent and its first API key, which answers to you; only with a key"
        " of your own (403 with a key another admin made: claim one first)",
        status=201,
        response="AgentCreatedOut",
        body="CreateAgentV1",
        errors=(400, 413, 422),
        idempotent=True,
    )
    def create_agent(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.CreateAgentV1())

        def produce() -> Response:
            agent = self.accounts.create_agent(caller, command)
            self.credentials.change(credentials.learn, agent.pop("credential"))
            request.environ[RESOURCES] = [agent["id"]]
            return json_response(201, agent)

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/agents",
        roles=ADMIN,
        summary="List the tenant's agents, or find one by e-mail address",
        response="AgentListOut",
        errors=(422,),
        listed=True,
        query="FindAgentsV1",
    )
    def list_agents(self, request: Request) -> Response:
        caller = self._caller(request)
        query = read_query(request, schemas.FindAgentsV1())
        limit, after = self._page(request)
        return self._listing(self.accounts.list_agents(caller["tenant_id"], limit, after, query))

    @api(
        "GET",
        "/v1/agents/<string:agent_id>",
        roles=ADMIN,
        summary="One agent",
        response="AgentOut",
        errors=(404,),
    )
    def get_agent(self, request: Request, agent_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.get_agent(caller["tenant_id"], agent_id))

    @api(
        "DELETE",
        "/v1/agents/<string:agent_id>",
        roles=ADMIN,
        summary="Deactivate an agent; its keys stop at once",
        response="AgentOut",
        errors=(404, 409),
    )
    def deactivate_agent(self, request: Request, agent_id: str) -> Response:
        caller = self._caller(request)
        if agent_id == caller["agent_id"]:
            raise Conflict("an admin cannot deactivate their own account")
        try:
            agent = self.accounts.deactivate_agent(caller, agent_id)
        except Conflict:
            # Already inactive in accounts (a first request whose write here failed, say):
            # inactive here too, then the same answer.
            self.credentials.change(credentials.deactivate_agent, caller["tenant_id"], agent_id)
            raise
        # In force for every gateway process before the answer says so.
        self.credentials.change(credentials.deactivate_agent, caller["tenant_id"], agent_id)
        return json_response(200, agent)

    @api(
        "POST",
        "/v1/agents/<string:agent_id>/api-keys",
        roles=ADMIN,
        summary="Issue another API key for an agent, which answers to you; only with a key of"
        " your own (403 with a key another admin made: claim one first)",
        status=201,
        response="ApiKeyOut",
        errors=(404, 409, 422),
        idempotent=True,
    )
    def issue_api_key(self, request: Request, agent_id: str) -> Response:
        caller = self._caller(request)

        def produce() -> Response:
            issued = self.accounts.issue_api_key(caller, agent_id)
            self.credentials.change(credentials.learn, issued.pop("credential"))
            return json_response(201, issued)

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "DELETE",
        "/v1/agents/<string:agent_id>/api-keys/<string:key_id>",
        roles=ADMIN,
        summary="Revoke an API key",
        status=204,
        errors=(404, 409),
    )
    def revoke_api_key(self, request: Request, agent_id: str, key_id: str) -> Response:
        caller = self._caller(request)
        try:
            self.accounts.revoke_api_key(caller, agent_id, key_id)
        except NotFound:
            # Not one of the agent's active keys in accounts (revoked by a first request whose
            # write here failed, say): ended here too if it is the agent's in this tenant.
            self.credentials.change(
                credentials.revoke_key_if_theirs, caller["tenant_id"], agent_id, key_id
            )
            raise
        # In force for every gateway process before the answer says so.
        self.credentials.change(credentials.revoke_key, caller["tenant_id"], agent_id, key_id)
        return Response(status=204)

    @api(
        "POST",
        "/v1/contacts",
        roles=STAFF,
        summary="Create a contact (an end customer)",
        status=201,
        response="ContactOut",
        body="CreateContactV1",
        errors=(400, 413, 422),
        idempotent=True,
        etag=True,
    )
    def create_contact(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.CreateContactV1())

        def produce() -> Response:
            contact = self.accounts.create_contact(caller, command)
            request.environ[RESOURCES] = [contact["id"]]
            return json_response(201, contact, {"ETag": etag(contact["version"])})

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/contacts",
        roles=STAFF,
        summary="List the tenant's contacts, or find them by e-mail address, phone number or"
        " name prefix; updated_since pages in the order they changed",
        response="ContactListOut",
        errors=(422,),
        listed=True,
        paging="changes",
        query="FindContactsV1",
    )
    def list_contacts(self, request: Request) -> Response:
        caller = self._caller(request)
        query = read_query(request, schemas.FindContactsV1())
        order = order_of(query)
        limit, after = self._page(request, order)
        page = self.accounts.list_contacts(caller["tenant_id"], limit, after, query)
        return self._listing(page, order)

    @api(
        "GET",
        "/v1/contacts/<string:contact_id>",
        roles=STAFF,
        summary="One contact",
        response="ContactOut",
        errors=(404,),
        etag=True,
    )
    def get_contact(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        contact = self.accounts.get_contact(caller["tenant_id"], contact_id)
        return json_response(200, contact, {"ETag": etag(contact["version"])})

    @api(
        "PATCH",
        "/v1/contacts/<string:contact_id>",
        roles=STAFF,
        summary="Rectify a contact",
        response="ContactOut",
        body="RectifyContactV1",
        errors=(400, 404, 409, 413, 422, 428),
        if_match=True,
        etag=True,
    )
    def rectify_contact(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.RectifyContactV1())
        version = if_match(request)
        contact = self.accounts.rectify_contact(caller, contact_id, version, command)
        return json_response(200, contact, {"ETag": etag(contact["version"])})

    @api(
        "PUT",
        "/v1/contacts/<string:contact_id>/consent",
        roles=STAFF,
        summary="Record marketing consent",
        response="ConsentSetOut",
        body="SetConsentV1",
        errors=(400, 404, 409, 413, 422),
    )
    def set_consent(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.SetConsentV1())
        return json_response(200, self.accounts.set_consent(caller, contact_id, command))

    @api(
        "GET",
        "/v1/contacts/<string:contact_id>/consent",
        roles=STAFF,
        summary="Consent now and its full history",
        response="ConsentStateOut",
        errors=(404,),
    )
    def get_consent(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.get_consent(caller["tenant_id"], contact_id))

    @api(
        "GET",
        "/v1/policies/current",
        summary="The current policy version",
        response="PolicyOut",
        errors=(404, 503),
    )
    def current_policy(self, request: Request) -> Response:
        return json_response(200, self.accounts.current_policy())

    @api(
        "POST",
        "/v1/operator/policies",
        operator=True,
        summary="Publish a new policy version (operator)",
        status=201,
        response="PolicyOut",
        body="PublishPolicyV1",
        errors=(400, 409, 413, 422),
        idempotent=True,
    )
    def publish_policy(self, request: Request) -> Response:
        self._operator(request)
        command = read_json(request, schemas.PublishPolicyV1())
        return self._idempotent(
            request, "operator", lambda: json_response(201, self.accounts.publish_policy(command))
        )

    @api(
        "GET",
        "/v1/policies/pending-acceptance",
        roles=ADMIN,
        summary="Agents who have not accepted the current version",
        response="PendingAcceptanceOut",
        errors=(404,),
    )
    def pending_acceptance(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.pending_acceptance(caller["tenant_id"]))

    @api(
        "POST",
        "/v1/policies/accept",
        roles=ANYONE,
        summary="Accept the current policy version",
        response="AcceptanceOut",
        body="AcceptPolicyV1",
        errors=(400, 404, 409, 413, 422),
    )
    def accept_policy(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.AcceptPolicyV1())
        return json_response(200, self.accounts.accept_policy(caller, command))


def _claimed(cur: credentials.Cursor, caller: dict, ended: list[str], credential: dict) -> None:
    """A claim: every key the caller held ends, and the new one works, in one transaction."""
    for key_id in ended:
        credentials.revoke_key(cur, caller["tenant_id"], caller["agent_id"], key_id)
    credentials.learn(cur, credential)
