from tests.integration.work.helpers import store, store_url, work_pg_database

__all__ = ["store", "store_url", "work_pg_database"]
