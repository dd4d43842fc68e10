from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """Real sample images shared by all sessions; the repo's parent holds shared/."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
