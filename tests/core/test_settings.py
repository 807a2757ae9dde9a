"""Settings come from the environment, with the documented names; credentials fail closed."""

import logging
import secrets

import pytest

from diffleet_core.settings import (
    DEVELOPMENT_CREDENTIALS,
    DEVELOPMENT_MODE,
    Credential,
    InsecureCredentialError,
    Settings,
    check_credential,
)
from tests.support.stack import ROOT, stack_config


def test_settings_read_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFLEET_AMQP_URL", "amqp://u:p@127.0.0.1:1/v")
    monkeypatch.setenv("DIFFLEET_DATABASE_URL", "postgresql://u:p@127.0.0.1:2/d")
    monkeypatch.setenv("DIFFLEET_BUCKETS__OUTPUTS", "my-outputs")
    settings = Settings()
    assert settings.amqp_url == "amqp://u:p@127.0.0.1:1/v"
    assert settings.database_url == "postgresql://u:p@127.0.0.1:2/d"
    assert settings.buckets.outputs == "my-outputs"
    assert settings.buckets.models == "diffleet-models"


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    """No development mode, whatever the shell running the tests exports."""
    monkeypatch.delenv(DEVELOPMENT_MODE, raising=False)


@pytest.mark.parametrize("value", ["", *sorted(DEVELOPMENT_CREDENTIALS)])
def test_outside_development_mode_an_unset_or_committed_credential_is_refused(
    value: str,
) -> None:
    with pytest.raises(InsecureCredentialError, match=r"^DIFFLEET_X_SECRET "):
        check_credential("DIFFLEET_X_SECRET", value, development_mode=False)
    check_credential("DIFFLEET_X_SECRET", value, development_mode=True)


def test_a_credential_of_the_deployment_is_accepted() -> None:
    check_credential("DIFFLEET_X_SECRET", secrets.token_urlsafe(), development_mode=False)


def test_every_credential_of_the_local_stack_is_a_development_one() -> None:
    config = stack_config()
    committed = {config[key] for key in config if key.endswith(("_USER", "_PASSWORD", "_KEY"))}
    assert committed <= DEVELOPMENT_CREDENTIALS


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIFFLEET_AMQP_URL", "amqp://guest:guest@rabbitmq:5672/"),
        ("DIFFLEET_AMQP_URL", "amqp://diffleet@rabbitmq:5672/diffleet"),
        ("DIFFLEET_DATABASE_URL", "postgresql://diffleet:diffleet-local@db:5432/diffleet"),
        ("AWS_SECRET_ACCESS_KEY", "diffleet-local-secret"),
    ],
)
def test_the_platform_credentials_are_checked_by_their_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    strong = secrets.token_urlsafe()
    monkeypatch.setenv("DIFFLEET_AMQP_URL", f"amqp://diffleet:{strong}@rabbitmq:5672/diffleet")
    monkeypatch.setenv("DIFFLEET_DATABASE_URL", f"postgresql://diffleet:{strong}@db/diffleet")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", strong)
    Settings().check_credentials(*Credential)
    monkeypatch.setenv(variable, value)
    with pytest.raises(InsecureCredentialError, match=f"^{variable} "):
        Settings().check_credentials(*Credential)


@pytest.mark.usefixtures("production")
def test_the_defaults_are_refused_but_an_unset_s3_key_is_left_to_boto3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("DIFFLEET_AMQP_URL", "DIFFLEET_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    settings = Settings()
    for credential in (Credential.AMQP, Credential.DATABASE):
        with pytest.raises(InsecureCredentialError, match=f"^{credential.value} "):
            settings.check_credentials(credential)
    settings.check_credentials(Credential.S3)


def test_development_mode_is_read_from_its_variable_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(DEVELOPMENT_MODE, "true")
    settings = Settings()
    assert settings.development_mode
    with caplog.at_level(logging.WARNING):
        settings.check_credentials(*Credential)
    assert "development mode" in caplog.text


def test_no_image_or_terraform_turns_development_mode_on() -> None:
    """The chart has a value for it, off by default: tests/charts/test_chart.py."""
    shipped = [*ROOT.glob("*/Dockerfile"), *ROOT.glob("terraform/**/*")]
    assert any(path.name == "Dockerfile" for path in shipped)
    setting = [
        path
        for path in shipped
        if path.is_file() and path.suffix != ".md" and DEVELOPMENT_MODE in path.read_text()
    ]
    assert setting == []


def test_the_settings_repr_holds_no_password() -> None:
    settings = Settings(
        amqp_url="amqp://diffleet:amqp-s3cret@broker:5672/diffleet",
        database_url="postgresql://diffleet:db-s3cret@db:5432/diffleet",
    )
    assert "s3cret" not in repr(settings)
