"""The third-party warnings our entry points hide: exactly those listed, by category and module.

Each listed warning is raised as its package raises it (category, module, message); beside it,
the same category from this project's own module, another category from the same third-party
module, and the same message from another package must all still reach the user.
"""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy.exc import SADeprecationWarning

from experiments.third_party_warnings import KNOWN_WARNINGS, hide_third_party_warnings

NOLOAD = "The ``noload`` loader strategy is deprecated and will be removed in a future release."


def shown(category: type[Warning], module: str, message: str) -> bool:
    """Whether a warning attributed to `module` reaches the user once the filters are set."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # everything shows unless a filter says otherwise
        hide_third_party_warnings()
        warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module)
    return len(caught) == 1


@pytest.mark.parametrize(
    "module",
    [
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
        "mlflow.store.jobs.sqlalchemy_store",
    ],
)
def test_mlflows_sqlalchemy_deprecation_is_hidden(module):
    assert not shown(SADeprecationWarning, module, NOLOAD)


def test_a_warning_of_our_own_still_shows():
    assert shown(SADeprecationWarning, "experiments.mirror", NOLOAD)
    assert shown(DeprecationWarning, "experiments.sweep", "ours: deprecated")
    assert shown(FutureWarning, "softmaxreg.trainer", "ours: will change")


def test_only_the_listed_category_and_message_are_hidden():
    module = "mlflow.store.tracking.sqlalchemy_store"
    assert shown(UserWarning, module, NOLOAD)  # another category from the same module
    assert shown(SADeprecationWarning, module, "another deprecation")  # another message
    assert shown(SADeprecationWarning, "sqlalchemy.orm.strategy_options", NOLOAD)


def test_every_entry_says_why_and_is_one_pytest_filter_too():
    for known in KNOWN_WARNINGS:
        assert known.why
        action, message, category, module = known.pytest_filter().split(":")
        assert (action, message, module) == ("ignore", known.message, known.module)
        assert category == known.category.__name__
