"""A real browser for the portal tests: Debian's Chromium, headless, driven by Selenium
through Debian's chromedriver (both installed by tests/run.sh; nothing is downloaded)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths) -> str | None:
    return next((p for p in paths if Path(p).exists()), None)


def chromium_paths() -> tuple[str, str] | None:
    """The browser and its driver, if installed."""
    browser = _first(CHROMIUM_CANDIDATES) or shutil.which("chromium")
    driver = _first(DRIVER_CANDIDATES) or shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    return None


class Browser:
    """A headless Chromium with its own profile; closed with `close()`."""

    def __init__(self, *, javascript: bool = True):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        paths = chromium_paths()
        if paths is None:
            raise RuntimeError("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
        browser, driver = paths
        self._profile = tempfile.mkdtemp(prefix="meshgate-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1600",
            f"--user-data-dir={self._profile}",
        ):
            options.add_argument(arg)
        if not javascript:
            options.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2}
            )
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.driver.set_page_load_timeout(60)

    def get(self, url: str, timeout: float = 30.0) -> None:
        """Opens `url` and waits until its document has loaded."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(url)
        WebDriverWait(self.driver, timeout).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    @property
    def url(self) -> str:
        return self.driver.current_url

    def source(self) -> str:
        return self.driver.page_source

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def texts(self, css: str, attribute: str, cell_css: str) -> dict[str, str]:
        """For every element matching `css`: its `attribute` -> the trimmed text of its
        first `cell_css` descendant, read in one script so a node cannot go stale between
        reads (Chromium's driver reports such a node as not belonging to the document)."""
        pairs = self.js(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => "
            "[e.getAttribute(arguments[1]), (e.querySelector(arguments[2]) || {innerText: ''}).innerText.trim()]);",
            css,
            attribute,
            cell_css,
        )
        return {k: v for k, v in pairs}

    def attributes(self, css: str, attribute: str) -> list[str | None]:
        """`attribute` of every element matching `css`, read in one script (see `texts`)."""
        return self.js(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e[arguments[1]] ?? e.getAttribute(arguments[1]));",
            css,
            attribute,
        )

    def count(self, css: str) -> int:
        """How many elements match `css`."""
        return self.js("return document.querySelectorAll(arguments[0]).length;", css)

    def submit(self, button_css: str, timeout: float = 30.0) -> None:
        """Clicks the form button `button_css` and waits until the next page has loaded.

        Done in scripts, not through element handles: a handle taken while Chromium
        settles the page can go stale before it is used."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.js("window.__meshgate_old_page = true; document.querySelector(arguments[0]).click();", button_css)
        wait = WebDriverWait(self.driver, timeout)
        wait.until(lambda d: d.execute_script(
            "return window.__meshgate_old_page === undefined && document.readyState === 'complete'"))

    def set_value(self, css: str, value: str) -> None:
        """Sets the value of the first input matching `css`, as a paste would."""
        self.js("document.querySelector(arguments[0]).value = arguments[1];", css, value)

    def console(self) -> list[dict]:
        """The browser console's entries since last asked (CSP violations land here)."""
        return self.driver.get_log("browser")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)
