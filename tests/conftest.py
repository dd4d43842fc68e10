from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """Real sample images shared by all sessions; the repo's parent holds shared/."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory):
    """Engines built by tests go to a throw-away cache, never the user's ~/.cache/hpinfer."""
    import os

    os.environ.setdefault("HPINFER_CACHE_DIR", str(tmp_path_factory.mktemp("hpinfer-cache")))
