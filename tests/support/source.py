"""An event-sourced writer for tests: the ``testsrc`` service's store, built from the kernel."""

from __future__ import annotations

from marshmallow import Schema, fields

from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.envelope import EventRegistry, EventType
from kernel.stores import prepare_databases
from kernel.uow import EventSourcedStore

SOURCE = "testsrc"


class ThingHappenedV1(Schema):
    thing_id = fields.String(required=True)
    n = fields.Integer(required=True)
    poison = fields.Boolean(load_default=False)


class PersonNamedV1(Schema):
    person_id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)


class MemberJoinedV1(Schema):
    person_id = fields.UUID(required=True)
    name = fields.String(required=True)
    company = fields.String(required=True)
    plan = fields.String(required=True)


THING_HAPPENED = EventType("thing_happened", {1: ThingHappenedV1}, published=True)
# A person's name under their key, and their tenant's company under the tenant's own key.
MEMBER_JOINED = EventType(
    "member_joined",
    {1: MemberJoinedV1},
    personal_fields=("name",),
    subject_field="person_id",
    tenant_fields=("company",),
    published=True,
)
PERSON_NAMED = EventType(
    "person_named",
    {1: PersonNamedV1},
    personal_fields=("name", "email"),
    subject_field="person_id",
)
REGISTRY = EventRegistry(THING_HAPPENED, PERSON_NAMED, MEMBER_JOINED)


def source_store(settings: Settings, projections=(), maxconn: int = 20) -> EventSourcedStore:
    prepare_databases(settings, SOURCE, None)
    keystore = Keystore(
        Database(settings.database_dsn(SOURCE, "keys"), maxconn=maxconn),
        settings.master_keys,
        cache_seconds=settings.key_cache_seconds,
    )
    return EventSourcedStore(
        SOURCE,
        Database(settings.database_dsn(SOURCE), maxconn=maxconn),
        REGISTRY,
        FieldCipher(keystore),
        projections,
    )
