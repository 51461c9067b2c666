"""tests/distributed: runs with real processes need a loopback interface to bind gloo to."""

import os

import pytest


@pytest.fixture
def loopback():
    if not os.path.exists("/sys/class/net/lo"):
        pytest.skip("no loopback interface 'lo' to bind gloo to")
