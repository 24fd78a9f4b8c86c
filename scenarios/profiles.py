"""squall's Hypothesis settings profiles, namespaced so they never replace a project's own:

- ``squall-dev``: 50 examples, random (quick, for a developer's run);
- ``squall-ci``: 30 examples, derandomised (the same examples on every run), no example
  database: reproducible in CI;
- ``squall-deep``: 2,000 examples, for a nightly job.

``register_profiles()`` registers those of them not registered yet; it never loads one.
Choose with pytest's ``--hypothesis-profile=squall-ci`` or ``HYPOTHESIS_PROFILE``.
Imports only Hypothesis: the pytest plugin calls it when pytest loads it, before
Hypothesis' own plugin reads ``--hypothesis-profile``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.errors import InvalidArgument

DEV, CI, DEEP = "squall-dev", "squall-ci", "squall-deep"

# Scenarios are large examples that take a while to run: these checks would only nag.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
          HealthCheck.filter_too_much]


def register_profiles() -> None:
    """Register ``squall-dev``, ``squall-ci`` and ``squall-deep`` where missing."""
    wanted = {
        DEV: {"max_examples": 50},
        CI: {"max_examples": 30, "derandomize": True, "database": None, "print_blob": True},
        DEEP: {"max_examples": 2000},
    }
    for name, options in wanted.items():
        try:
            settings.get_profile(name)
        except InvalidArgument:
            settings.register_profile(name, deadline=None, suppress_health_check=_QUIET,
                                      **options)  # type: ignore[arg-type]
