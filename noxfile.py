"""Sessions: ``tests`` (every Python × Django pair, on PostgreSQL and SQLite), ``lint``, ``docs``."""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# Pythons installed with pyenv are found even when pyenv's global version is another one.
_pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
for _bin in sorted(glob.glob(os.path.join(_pyenv_root, "versions", "3.*", "bin"))):
    if _bin not in os.environ.get("PATH", ""):
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + _bin

MATRIX = [("3.11", "5.2"), ("3.12", "6.0"), ("3.13", "6.1")]
DATABASES = ("postgresql", "sqlite")


@nox.session
@nox.parametrize(("python", "django"), MATRIX, ids=[f"py{p}-django{d}" for p, d in MATRIX])
def tests(session: nox.Session, django: str) -> None:
    """The whole suite on PostgreSQL, then on SQLite; then on PostgreSQL through psycopg2."""
    # Django 5.2 has no django.tasks: the backport, so that the Tasks backend is tested there too.
    extras = "test,tasks" if django == "5.2" else "test"
    session.install("-e", f".[{extras}]", f"django~={django}.0")
    for database in DATABASES:
        session.run(
            "python",
            "-m",
            "pytest",
            *session.posargs,
            env={"AIO_ASYNC_TEST_DB": database},
        )
    if (session.python, django) == MATRIX[-1]:
        # Projects still on psycopg2: the same suite, less what needs psycopg 3 (the worker's own
        # asyncio connection, LISTEN), in a virtual environment of its own without psycopg 3.
        session.run("python", "-m", "venv", "--clear", ".nox/psycopg2", external=True)
        python = ".nox/psycopg2/bin/python"
        session.run(python, "-m", "pip", "install", "-q", "-e", ".", "psycopg2-binary",
                    "pytest>=8", "pytest-django>=4.9", "pytest-asyncio>=0.24", f"django~={django}.0",
                    external=True)  # fmt: skip
        session.run(
            python, "-m", "pytest", *session.posargs, env={"AIO_ASYNC_TEST_DB": "postgresql"}, external=True
        )


@nox.session(python="3.12")
def bench(session: nox.Session) -> None:
    """aio_async beside procrastinate, django-tasks-db and pgqueuer on PostgreSQL (``-- --help``)."""
    session.install("-e", ".[postgres]", "django~=6.1.0")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    """ruff, mypy (strict, django-stubs), Django's system checks and a migrations check."""
    session.install("-e", ".[test,lint]", "django~=6.0.0")
    session.run("ruff", "check", "aio_async", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "aio_async", "tests", "benchmarks", "noxfile.py")
    session.run("mypy", "aio_async", "tests")
    env = {"AIO_ASYNC_TEST_DB": "sqlite", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    session.run("python", "-m", "django", "check", "--fail-level", "WARNING", env=env)
    session.run("python", "-m", "django", "makemigrations", "--check", "--dry-run", env=env)


@nox.session(python="3.12")
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly (a warning fails it) into ``site/``."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
