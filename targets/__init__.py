"""squall.targets: the schedulers squall validates, each behind the ``Target`` seam."""
