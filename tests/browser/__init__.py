"""Browser tests: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright against a real server.

A package, so that its conftest module is ``browser.conftest`` and never shadows ``tests/conftest.py``
(which the other tests import as ``conftest``).
"""
