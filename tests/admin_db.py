"""Test helper: a clean PostgreSQL test database for the admin and provisioning stacks.

conftest's clean_database drops the store's tables; the admin part keeps three more
(bridge/store/admin_tables.py), which must go too so that one module's rooms and sealed secrets
do not leak into the next module's bridge.
"""

from __future__ import annotations

from tests.conftest import clean_database


def clean(url: str | None) -> None:
    """Drop every table of the bridge (the admin ones too) on a PostgreSQL test database."""
    if not url:
        return
    clean_database(url)
    from bridge.store.admin_tables import MODELS
    from bridge.store.models import MEDIA_MODELS, open_database
    from bridge.store.room_options import RoomOption

    db = open_database(url)
    models = (*MODELS, RoomOption, *MEDIA_MODELS)
    with db.connection_context(), db.bind_ctx(models):
        db.drop_tables(models, safe=True)
    db.close()
