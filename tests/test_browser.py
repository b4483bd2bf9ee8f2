"""The `vecsearch serve` web page in a real headless Chromium, against the library's own answers.

A small real index (tiny open_clip model, FAISS, SQLite) is served in-process by uvicorn; Selenium drives
Debian's chromium through chromedriver, both given by path (Selenium never downloads a browser or a
driver). Every result the page shows is compared with the same search made through the library: searches,
the collection browsed with no query, addresses (reload, back/forward, shared links) and, on a second
server with a token, the sign-in.

Without chromium/chromedriver/selenium the module is skipped, unless VECSEARCH_REQUIRE_BROWSER=1 (as in
CI), where it fails instead. A screenshot of a search is kept in $VECSEARCH_TEST_ARTIFACTS (default
<repo>/test-artifacts/serve-results.png).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import echoed_query, index_of, make_collection
from PIL import Image

from vecsearch import Index

K = 8
PROMPT = "a red apple"
REQUIRE = os.environ.get("VECSEARCH_REQUIRE_BROWSER") == "1"
REPO = Path(__file__).resolve().parents[1]
WAIT_S = 20


def _unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    for module in ("selenium", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            return f"python package {module} not installed (pip install -e '.[test]')"
    return None


# --- the index and the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "trips/night", "more/snow"]
    return make_collection(tmp_path_factory.mktemp("browser-photos"), names, extra=4, extra_colour=2, extra_seed=30)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_encoder) -> Path:
    return index_of(tmp_path_factory.mktemp("browser-index") / "index", photos, tiny_encoder)


@pytest.fixture(scope="module", autouse=True)
def browser_available() -> None:
    """Skip the module (fail it, under VECSEARCH_REQUIRE_BROWSER=1) before building anything."""
    reason = _unavailable()
    if reason:
        if REQUIRE:
            pytest.fail(f"VECSEARCH_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


@contextlib.contextmanager
def serving(folder: Path, encoder: Any, **options: Any) -> Iterator[str]:
    """The real application on 127.0.0.1 (a port of its own), in a thread; yields its base URL."""
    import uvicorn

    from vecsearch.serve import create_app

    with Index.open(folder, encoder=encoder) as index:
        app = create_app(index, **options)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port meanwhile
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2) as response:
                    assert json.load(response)["status"] == "ok"
                break
            except OSError:
                assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        try:
            yield base
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


@pytest.fixture(scope="module")
def server(folder: Path, tiny_encoder) -> Iterator[str]:
    with serving(folder, tiny_encoder) as base:
        yield base


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common import selenium_manager

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        "--disable-gpu",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        # Both paths are given; if Selenium still wanted its manager, it would download: fail instead.
        def no_download(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("selenium manager was called: it would download a browser or a driver")

        patch.setattr(selenium_manager.SeleniumManager, "binary_paths", no_download)
        driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# --- helpers --------------------------------------------------------------------------------------------


def wait(driver: Any, condition: Callable[[Any], Any], message: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message)


def done_count(driver: Any) -> int:
    return int(driver.execute_script("return document.body.dataset.done"))


def act(driver: Any, do: Callable[[], Any]) -> None:
    """Do something on the page and wait until the actions it started are over (body[data-state=idle])."""
    before = done_count(driver)
    do()
    wait(
        driver,
        lambda d: d.execute_script(
            "return document.body.dataset.state === 'idle' && Number(document.body.dataset.done) > arguments[0]", before
        ),
        "the page did not finish its requests",
    )


def loaded(driver: Any, url: str | None = None) -> None:
    """Open `url` (None: reload the page) and wait until the page has shown what its address names."""
    if url is None:
        driver.refresh()
    else:
        driver.get(url)
    wait(
        driver,
        lambda d: d.execute_script(
            "return document.body.dataset.state === 'idle' && Number(document.body.dataset.done) >= 1"
        ),
        "the page did not load the index's info",
    )


def open_page(driver: Any, server: str) -> None:
    loaded(driver, server + "/")
    k = find(driver, "#k")
    k.clear()
    k.send_keys(str(K))
    driver.get_log("browser")  # start each test with an empty console


def find(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def find_all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def search_for(driver: Any, prompt: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = find(driver, "#prompt")
    box.clear()
    act(driver, lambda: box.send_keys(prompt, Keys.ENTER))


def cards(driver: Any) -> list[dict[str, Any]]:
    """The result cards as the page shows them."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#results .result')).map((card) => ({
          id: Number(card.dataset.id), rank: Number(card.dataset.rank), kind: card.dataset.kind,
          score: card.querySelector('.score') ? card.querySelector('.score').textContent : null,
          caption: card.querySelector('.caption').textContent,
          alt: card.querySelector('img.thumb') ? card.querySelector('img.thumb').alt : null,
        }));""")


def query_json(driver: Any) -> dict[str, Any]:
    return json.loads(find(driver, "#query-json").get_attribute("textContent"))


def assert_results(driver: Any, expected: list) -> None:
    """The cards are the library's hits, in order, with their ranks and scores to 3 decimals."""
    shown = cards(driver)
    assert [c["id"] for c in shown] == [h.id for h in expected]
    assert [c["rank"] for c in shown] == list(range(1, len(expected) + 1))
    for card, hit in zip(shown, expected, strict=True):
        assert re.fullmatch(r"-?\d\.\d{3}", card["score"]), card["score"]
        assert abs(float(card["score"]) - hit.score) <= 0.0005 + 1e-6
        assert card["kind"] == hit.kind
        assert card["caption"] == (hit.caption or "")


def wait_for_thumbnails(driver: Any, count: int) -> None:
    """Every card's thumbnail is a decoded picture (naturalWidth > 0), not a broken image."""
    wait(
        driver,
        lambda d: d.execute_script(
            """
        const imgs = Array.from(document.querySelectorAll('#results .result img.thumb'));
        return imgs.length === arguments[0] && imgs.every((img) => img.complete && img.naturalWidth > 0);
        """,
            count,
        ),
        "the thumbnails did not load",
    )


def assert_no_script_errors(driver: Any) -> None:
    """No uncaught exception in the page (an API's 4xx answer logs a failed resource: that is expected)."""
    errors = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    assert not errors, errors


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("VECSEARCH_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- the tests ------------------------------------------------------------------------------------------


def test_header_shows_the_index(browser: Any, server: str, library: Index) -> None:
    open_page(browser, server)
    info = find(browser, "#info").text
    assert library.name in info and str(library.spec) in info
    assert f"{library.counts()['items']} items" in info
    assert browser.title.startswith(library.name)
    assert_no_script_errors(browser)


def test_prompt_search_shows_the_library_results(browser: Any, server: str, library: Index) -> None:
    open_page(browser, server)
    search_for(browser, PROMPT)
    expected = library.search(PROMPT, k=K)
    assert len(expected) == K
    assert_results(browser, expected)
    wait_for_thumbnails(browser, K)
    assert [c["alt"] for c in cards(browser)] == [h.caption or h.relpath for h in expected]
    assert re.fullmatch(rf"{K} results in \d+ ms", find(browser, "#status").text)
    assert query_json(browser) == echoed_query([PROMPT], K)
    assert find(browser, "#error").get_attribute("hidden") is not None

    # Copy: to the clipboard where the browser allows it, else the JSON is selected for Ctrl+C.
    find(browser, "#copy-query").click()
    wait(browser, lambda d: d.find_element("css selector", "#copy-status").text, "Copy said nothing")
    if find(browser, "#copy-status").text != "Copied.":
        assert json.loads(browser.execute_script("return window.getSelection().toString()")) == query_json(browser)

    shot = artifacts_dir() / "serve-results.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as picture:
        picture.verify()
    with Image.open(shot) as picture:
        assert picture.format == "PNG" and abs(picture.width - 1280) <= 40, picture.size
    print(f"screenshot: {shot}")
    assert_no_script_errors(browser)


def test_more_and_less_like_this_refine_the_query(browser: Any, server: str, library: Index) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    search_for(browser, PROMPT)
    liked = int(find_all(browser, "#results .result")[2].get_attribute("data-id"))
    act(browser, lambda: find(browser, f'#results .result[data-id="{liked}"] .more-like').click())
    assert query_json(browser)["like"] == [liked] and query_json(browser)["unlike"] == []
    assert_results(browser, library.search(PROMPT, k=K, like=[liked]))
    assert find_all(browser, f'#chips li[data-id="{liked}"]')

    unliked = int(find_all(browser, "#results .result")[0].get_attribute("data-id"))
    act(browser, lambda: find(browser, f'#results .result[data-id="{unliked}"] .less-like').click())
    assert (query_json(browser)["like"], query_json(browser)["unlike"]) == ([liked], [unliked])
    assert_results(browser, library.search(PROMPT, k=K, like=[liked], unlike=[unliked]))

    # Escape (outside a text box) drops the refinement and searches again.
    act(browser, lambda: ActionChains(browser).send_keys(Keys.ESCAPE).perform())
    assert (query_json(browser)["like"], query_json(browser)["unlike"]) == ([], [])
    assert not find_all(browser, "#chips li[data-id]")
    assert_results(browser, library.search(PROMPT, k=K))
    assert_no_script_errors(browser)


def drop_file(driver: Any, data: bytes, name: str, mime: str = "image/png") -> None:
    """A real drop event on the drop zone, its DataTransfer holding a File made of these bytes."""
    driver.execute_script(
        """
        const [b64, name, mime] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: mime }));
        const zone = document.querySelector('#drop-zone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
        }""",
        base64.b64encode(data).decode("ascii"),
        name,
        mime,
    )


def test_dropped_and_chosen_pictures_search_like_the_files(
    browser: Any, server: str, library: Index, photos: Path
) -> None:
    open_page(browser, server)
    dropped = photos / "sea.png"
    data = dropped.read_bytes()
    act(browser, lambda: drop_file(browser, data, "sea.png"))
    term = "upload:" + hashlib.sha256(data).hexdigest()
    assert find(browser, "#upload-chip").get_attribute("data-term") == term
    assert query_json(browser)["terms"] == [term]
    assert_results(browser, library.search([str(dropped)], k=K))
    wait_for_thumbnails(browser, K)

    # The uploaded picture can be described, like an indexed one.
    act(browser, lambda: find(browser, "#upload-chip .describe-upload").click())
    texts = [e.text for e in find_all(browser, "#describe-output .described-text")]
    assert texts == [h.caption for h in library.describe(dropped, k=5)]
    find(browser, "#close-panel").click()
    assert find(browser, "#picture-panel").get_attribute("open") is None

    # Removing the chip leaves an empty query: the collection again, no request refused.
    act(browser, lambda: find(browser, "#upload-chip .chip-remove").click())
    assert not find_all(browser, "#upload-chip") and query_json(browser)["terms"] == []
    view = browser.execute_script("return document.body.dataset.view")
    assert view == "browse" and all(c["score"] is None for c in cards(browser))

    chosen = photos / "more" / "m1.jpg"
    act(browser, lambda: find(browser, "#file-input").send_keys(str(chosen)))
    assert query_json(browser)["terms"] == ["upload:" + hashlib.sha256(chosen.read_bytes()).hexdigest()]
    assert_results(browser, library.search([str(chosen)], k=K))

    # A picture and a prompt together make one query of two terms.
    search_for(browser, "a blue sea")
    assert query_json(browser)["terms"][0] == "a blue sea" and len(query_json(browser)["terms"]) == 2
    assert_results(browser, library.search(["a blue sea", str(chosen)], k=K))
    assert find(browser, "#error").get_attribute("hidden") is not None

    # A file the server cannot decode: its 415 message on the page, the query as it was.
    act(browser, lambda: drop_file(browser, b"just some text", "notes.png"))
    assert "not a readable image" in find(browser, "#error").text
    assert query_json(browser)["terms"][1] == "upload:" + hashlib.sha256(chosen.read_bytes()).hexdigest()
    assert_no_script_errors(browser)


def test_describe_and_classify_a_result(browser: Any, server: str, library: Index) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    search_for(browser, PROMPT)
    first = find_all(browser, "#results .result")[0]
    item = int(first.get_attribute("data-id"))
    act(browser, lambda: first.find_element("css selector", ".describe").click())
    assert find(browser, "#picture-panel").get_attribute("open") is not None
    texts = [e.text for e in find_all(browser, "#describe-output .described-text")]
    expected = library.describe(f"id:{item}", k=5)
    assert texts and texts == [h.caption for h in expected]

    labels = find(browser, "#classify-labels")
    labels.send_keys("red, blue")
    act(browser, lambda: find(browser, "#classify-button").click())
    shown = [
        (e.find_element("css selector", ".label").text, e.find_element("css selector", ".probability").text)
        for e in find_all(browser, "#classify-output li")
    ]
    reference = library.classify(f"id:{item}", ["red", "blue"])
    assert [label for label, _ in shown] == [x.label for x in reference]
    for (_, percent), x in zip(shown, reference, strict=True):
        assert abs(float(percent.rstrip("%")) - 100 * x.probability) <= 0.05 + 1e-6

    # Escape closes the panel, and leaves the results as they were.
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    wait(
        browser,
        lambda d: d.find_element("css selector", "#picture-panel").get_attribute("open") is None,
        "Escape did not close the panel",
    )
    assert [c["id"] for c in cards(browser)] == [h.id for h in library.search(PROMPT, k=K)]
    assert_no_script_errors(browser)


@pytest.mark.parametrize("filters", [{"kind": "caption"}, {"path": "trips/*"}, {"path": "*.jpg", "within": 0.05}])
def test_filters_follow_the_library(browser: Any, server: str, library: Index, filters: dict) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    search_for(browser, PROMPT)
    if "kind" in filters:
        Select(find(browser, "#kind")).select_by_value(filters["kind"])
    if "within" in filters:
        find(browser, "#within").send_keys(str(filters["within"]))
    if "path" in filters:
        # Enter in a filter box searches too (the filters belong to the search form).
        act(browser, lambda: find(browser, "#path").send_keys(filters["path"], Keys.ENTER))
    else:
        act(browser, lambda: find(browser, "#search-button").click())
    expected = library.search(PROMPT, k=K, **filters)
    assert expected
    assert_results(browser, expected)
    assert {key: query_json(browser)[key] for key in filters} == filters
    if filters.get("kind") == "caption":
        # A caption shows the picture it describes.
        assert all(c["kind"] == "caption" for c in cards(browser))
        wait_for_thumbnails(browser, len(expected))
    assert_no_script_errors(browser)


def test_refused_query_shows_the_servers_message(browser: Any, server: str, library: Index) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    open_page(browser, server)
    search_for(browser, "image:/etc/passwd")
    error = find(browser, "#error")
    assert error.is_displayed() and error.get_attribute("aria-live") == "assertive"
    assert re.search(r"cannot name a file or a URL|paths and URLs are refused", error.text), error.text
    assert "Traceback" not in error.text and "{" not in error.text
    assert not cards(browser)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (the message is on the page, not in an alert)

    search_for(browser, PROMPT)  # the next good search clears it
    assert not error.is_displayed()
    assert_results(browser, library.search(PROMPT, k=K))
    assert_no_script_errors(browser)


def test_keyboard(browser: Any, server: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    browser.execute_script("document.querySelector('#search-button').focus()")
    assert browser.switch_to.active_element.get_attribute("id") == "search-button"
    ActionChains(browser).send_keys("/").perform()
    assert browser.switch_to.active_element.get_attribute("id") == "prompt"
    assert find(browser, "#prompt").get_attribute("value") == ""  # the key focused, it typed nothing

    # Tab from the search button reaches the result cards' controls.
    search_for(browser, PROMPT)
    browser.execute_script("document.querySelector('#search-button').focus()")
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.execute_script("return document.activeElement.closest('.result') !== null"):
            break
    else:
        raise AssertionError("Tab never reached a result")

    path = find(browser, "#path")  # in a text box, "/" is just a character
    path.click()
    ActionChains(browser).send_keys("trips/").perform()
    assert browser.switch_to.active_element.get_attribute("id") == "path"
    assert path.get_attribute("value") == "trips/"
    assert_no_script_errors(browser)


def test_tag_filter_and_tags_on_results(browser: Any, server: str, library: Index) -> None:
    """The tag filter appears once the index has tags, lists them with their counts, filters as the
    library does; each card shows its picture's tags."""
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    assert not find(browser, "#tag").is_displayed()  # no tags: no filter
    labels = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
    library.tag(labels, top=2)
    try:
        open_page(browser, server)
        counts = library.tag_counts()
        options = [option.text for option in Select(find(browser, "#tag")).options]
        assert options == ["Any", *(f"{label} ({count})" for label, count in counts.items())]
        search_for(browser, PROMPT)
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll('#results .result')).map((card) =>"
            " Array.from(card.querySelectorAll('.tag')).map((tag) => tag.textContent))"
        )
        assert shown == [[tag.label for tag in hit.tags] for hit in library.search(PROMPT, k=K)]

        label = max(counts, key=lambda name: (counts[name] < library.counts()["images"], counts[name]))
        Select(find(browser, "#tag")).select_by_value(label)
        act(browser, lambda: find(browser, "#search-button").click())
        expected = library.search(PROMPT, k=K, tag=label)
        assert expected
        assert_results(browser, expected)
        assert query_json(browser)["tag"] == label
        assert_no_script_errors(browser)
    finally:
        library.untag()


# --- links, browsing and signing in ---------------------------------------------------------------------


def address(driver: Any) -> dict[str, list[str]]:
    """The page address's query parameters."""
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(driver.current_url).query)


def view(driver: Any) -> str:
    return str(driver.execute_script("return document.body.dataset.view"))


def assert_browsed(driver: Any, page: Any) -> None:
    """The cards are the library's page of pictures: ids, positions and first captions, and no scores."""
    shown = cards(driver)
    assert view(driver) == "browse"
    assert [c["id"] for c in shown] == [item.id for item in page.items]
    assert [c["rank"] for c in shown] == list(range(page.offset + 1, page.offset + len(page.items) + 1))
    assert [c["caption"] for c in shown] == [item.captions[0].text if item.captions else "" for item in page.items]
    assert all(c["score"] is None and c["kind"] == "image" for c in shown)


def test_the_empty_page_browses_the_collection(browser: Any, server: str, library: Index) -> None:
    from selenium.webdriver.support.ui import Select

    loaded(browser, f"{server}/?k={K}&seed=12345")
    first = library.browse(K, 0, seed=12345)
    assert first.total == library.counts()["images"] > K
    assert_browsed(browser, first)
    wait_for_thumbnails(browser, K)
    assert find(browser, "#status").text.startswith(f"Pictures 1–{K} of {first.total}, shuffled.")
    assert not find(browser, "#browse-prev").is_enabled()

    act(browser, lambda: find(browser, "#browse-next").click())
    second = library.browse(K, K, seed=12345)
    assert_browsed(browser, second)
    assert (address(browser)["offset"], address(browser)["seed"]) == ([str(K)], ["12345"])
    assert not find(browser, "#browse-next").is_enabled()  # the last page
    act(browser, browser.back)
    assert_browsed(browser, first)

    # A bare address gets a shuffle of its own, kept in the address: a reload shows the same pictures.
    loaded(browser, server + "/")
    seed = int(address(browser)["seed"][0])
    assert_browsed(browser, library.browse(12, seed=seed))
    loaded(browser)
    assert_browsed(browser, library.browse(12, seed=seed))

    act(browser, lambda: Select(find(browser, "#browse-order")).select_by_value("newest"))
    assert_browsed(browser, library.browse(12, order="newest"))
    assert address(browser)["order"] == ["newest"]

    # "More like this" on a browsed picture searches by it.
    target = cards(browser)[1]["id"]
    act(browser, lambda: find(browser, f'#results .result[data-id="{target}"] .more-like').click())
    assert view(browser) == "search" and (query_json(browser)["terms"], query_json(browser)["like"]) == ([], [target])
    assert_results(browser, library.search([], k=12, like=[target]))
    assert address(browser)["like"] == [str(target)] and "order" not in address(browser)
    assert_no_script_errors(browser)


def test_reload_back_and_forward_keep_the_searches(browser: Any, server: str, library: Index) -> None:
    open_page(browser, server)
    search_for(browser, PROMPT)
    search_for(browser, "a blue sea")
    act(browser, browser.back)
    assert find(browser, "#prompt").get_attribute("value") == PROMPT
    assert_results(browser, library.search(PROMPT, k=K))
    act(browser, browser.forward)
    assert find(browser, "#prompt").get_attribute("value") == "a blue sea"
    assert_results(browser, library.search("a blue sea", k=K))
    act(browser, browser.back)
    act(browser, browser.back)
    assert view(browser) == "browse" and find(browser, "#prompt").get_attribute("value") == ""

    # A refined search survives a reload: prompt, k, refinement (its chip named) and results.
    act(browser, browser.forward)
    liked = cards(browser)[2]["id"]
    act(browser, lambda: find(browser, f'#results .result[data-id="{liked}"] .more-like').click())
    link = address(browser)
    assert (link["q"], link["k"], link["like"]) == ([PROMPT], [str(K)], [str(liked)])
    loaded(browser)
    assert find(browser, "#prompt").get_attribute("value") == PROMPT
    assert find(browser, "#k").get_attribute("value") == str(K)
    assert query_json(browser)["like"] == [liked]
    assert_results(browser, library.search(PROMPT, k=K, like=[liked]))
    item = library.item(liked)
    assert item is not None
    wait(
        browser,
        lambda d: d.find_element("css selector", f'#chips li[data-id="{liked}"] .chip-text').text == item.relpath,
        "the refinement's chip did not name its picture",
    )
    assert_no_script_errors(browser)


def test_a_shared_link_gives_the_library_results(browser: Any, server: str, library: Index, photos: Path) -> None:
    from urllib.parse import urlencode

    picture = photos / "sea.png"
    open_page(browser, server)  # the picture is uploaded by this page; the link is opened in another
    act(browser, lambda: drop_file(browser, picture.read_bytes(), "sea.png"))
    sha = hashlib.sha256(picture.read_bytes()).hexdigest()
    hits = library.search(PROMPT, k=K)
    liked, unliked = hits[1].id, hits[3].id
    link = f"{server}/?" + urlencode(
        [("q", PROMPT), ("k", K), ("kind", "image"), ("like", liked), ("unlike", unliked), ("upload", sha)]
    )
    original = browser.current_window_handle
    browser.switch_to.new_window("tab")
    try:
        loaded(browser, link)
        expected = library.search([PROMPT, str(picture)], k=K, kind="image", like=[liked], unlike=[unliked])
        assert_results(browser, expected)
        wait_for_thumbnails(browser, K)
        shown = query_json(browser)
        assert (shown["terms"], shown["like"], shown["unlike"]) == ([PROMPT, f"upload:{sha}"], [liked], [unliked])
        assert find(browser, "#upload-chip").get_attribute("data-term") == f"upload:{sha}"
        chip_picture = "const i = document.querySelector('#upload-chip img'); return i && i.naturalWidth"
        wait(browser, lambda d: d.execute_script(chip_picture), "the upload chip shows the server's thumbnail")

        # A picture the server does not hold (any more): its message, and no results of another query.
        loaded(browser, f"{server}/?q=fruit&upload={'0' * 64}")
        assert "upload it again" in find(browser, "#error").text and not cards(browser)
        assert_no_script_errors(browser)
    finally:
        browser.close()
        browser.switch_to.window(original)


TOKEN = "a-test-token-of-32-characters-ok"


@pytest.fixture(scope="module")
def token_server(folder: Path, tiny_encoder) -> Iterator[str]:
    with serving(folder, tiny_encoder, token=TOKEN) as base:
        yield base


def sign_in_with(driver: Any, token: str, attempt: int) -> str:
    """Type a token into the sign-in dialog; the server's refusal, or '' once the dialog has closed."""
    from selenium.webdriver.common.keys import Keys

    field = find(driver, "#token-input")
    field.clear()
    field.send_keys(token, Keys.ENTER)
    return wait(
        driver,
        lambda d: d.execute_script(
            """const dialog = document.querySelector('#token-dialog'), error = document.querySelector('#token-error');
            if (!dialog.open) return ' ';
            return Number(error.dataset.attempts || 0) >= arguments[0] ? error.textContent : false;""",
            attempt,
        ),
        "the sign-in did not answer",
    ).strip()


def test_a_server_with_a_token_asks_for_it(browser: Any, token_server: str, library: Index) -> None:
    from urllib.parse import quote

    browser.get(f"{token_server}/?q={quote(PROMPT)}&k={K}")
    wait(browser, lambda d: d.find_element("css selector", "#token-dialog").get_attribute("open"), "no sign-in")
    assert "authentication required" in find(browser, "#token-detail").text
    assert find(browser, "#token-input").get_attribute("type") == "password"
    assert sign_in_with(browser, "not-the-token-at-all-0123", 1) == "wrong token"
    assert sign_in_with(browser, TOKEN, 2) == ""
    wait(browser, lambda d: d.execute_script("return document.body.dataset.state === 'idle'"), "no search")
    assert_results(browser, library.search(PROMPT, k=K))
    wait_for_thumbnails(browser, K)  # the session cookie carries the pictures' requests too
    cookies = {cookie["name"]: cookie for cookie in browser.get_cookies()}
    assert cookies["vecsearch_session"]["httpOnly"] and "vecsearch_session" not in browser.execute_script(
        "return document.cookie"
    )
    assert_no_script_errors(browser)

    # Signed out, too many wrong tokens: the server's 429 message in the dialog.
    browser.execute_async_script("fetch('/api/v1/session', {method: 'DELETE'}).then(() => arguments[0]())")
    browser.get(token_server + "/")
    wait(browser, lambda d: d.find_element("css selector", "#token-dialog").get_attribute("open"), "no sign-in")
    answers = [sign_in_with(browser, f"wrong-token-number-{n:04d}", n) for n in range(1, 11)]
    assert answers[:-1] == ["wrong token"] * 9 and answers[-1].startswith("too many wrong tokens")
    assert find(browser, "#token-dialog").get_attribute("open") is not None
