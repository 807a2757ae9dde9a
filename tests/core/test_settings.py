"""Settings come from the environment, with the documented names."""

import pytest

from diffleet_core.settings import Settings


def test_settings_read_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFLEET_AMQP_URL", "amqp://u:p@127.0.0.1:1/v")
    monkeypatch.setenv("DIFFLEET_DATABASE_URL", "postgresql://u:p@127.0.0.1:2/d")
    monkeypatch.setenv("DIFFLEET_BUCKETS__OUTPUTS", "my-outputs")
    settings = Settings()
    assert settings.amqp_url == "amqp://u:p@127.0.0.1:1/v"
    assert settings.database_url == "postgresql://u:p@127.0.0.1:2/d"
    assert settings.buckets.outputs == "my-outputs"
    assert settings.buckets.models == "diffleet-models"
