"""The web tests run on both stores: the conformance suite's fixtures."""

from tests.integration.store.conftest import open_more, store, store_url

__all__ = ["open_more", "store", "store_url"]
