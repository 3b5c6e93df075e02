"""Another extension of a service finds the service's store through ``store_of``."""

import pytest
from nameko.containers import ServiceContainer
from nameko.extensions import DependencyProvider

from kernel.envelope import EventRegistry
from kernel.nameko_adapters.store import EventStoreDependency, store_of


class Other(DependencyProvider):
    pass


class Service:
    name = "things"

    other = Other()
    store = EventStoreDependency(EventRegistry())


def the_store_dependency(container: ServiceContainer) -> EventStoreDependency:
    [dependency] = [d for d in container.dependencies if isinstance(d, EventStoreDependency)]
    return dependency


def test_the_store_the_dependency_opened_is_found():
    container = ServiceContainer(Service, config={})
    opened = object()  # what setup would open; the lookup only hands it on
    the_store_dependency(container).store = opened
    assert store_of(container) is opened


def test_before_setup_the_lookup_says_so():
    container = ServiceContainer(Service, config={})
    with pytest.raises(RuntimeError, match="things service's store is not set up"):
        store_of(container)
