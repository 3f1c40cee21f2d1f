"""The store conformance fixtures (``store_url``, ``store``): the checker reads any store."""

from tests.integration.store.conftest import store, store_url

__all__ = ["store", "store_url"]
