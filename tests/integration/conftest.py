"""Fixtures for integration tests: the real agent binary against a private swtpm."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

from swtpm import Swtpm  # noqa: E402

from agent import AGENT, Agent  # noqa: E402,F401


@pytest.fixture
def tpm(tmp_path):
    t = Swtpm(str(tmp_path))
    yield t
    t.close()


@pytest.fixture
def tpm_no_ek(tmp_path):
    """A TPM as real ones usually come: an EK certificate in NV, no persisted EK."""
    t = Swtpm(str(tmp_path), persist_ek=False)
    yield t
    t.close()


@pytest.fixture
def agent_for(tmp_path):
    def make(t):
        return Agent(t.tcti, str(tmp_path))
    return make
