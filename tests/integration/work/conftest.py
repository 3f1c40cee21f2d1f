from tests.integration.work.helpers import store, store_url

__all__ = ["store", "store_url"]
