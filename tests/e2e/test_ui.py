"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against the whole
stack (auth, media and gateway as processes, production settings).

The scenarios run in file order on one stack of their own: the first one meets a fresh
instance and creates its only account. Every page of every scenario is watched: any
console error, uncaught exception, CSP violation, script dialog or HTTP error the
scenario did not announce fails it, and ``document.cookie`` must never show the token.
Screenshots of each screen go to ``tests/e2e/artifacts/``.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from deploy.stack import BackgroundStack
from tests.e2e.ui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SVG_BYTES,
    XSS_CAPTION,
    Ui,
    assert_no_token_cookie,
    jpeg_bytes,
    mp4_bytes,
    png_bytes,
    screenshot,
    strava_export,
)
from tests.support import AUTH_COOKIE, CI

# Small, so that the oversize file is small too; the gateway allows it plus 1 MiB of
# multipart overhead, so a file a little over this limit is judged by media itself.
MEDIA_LIMIT = 1_048_576
PHONE = {"width": 390, "height": 844}


@dataclass
class Owner:
    username: str = "ada.runner"
    password: str = "quartz lantern meadow 1987"


# The UI stack is deployed as compose deploys: the first registration needs this code.
SETUP_CODE = "ember-quarry-sextant-51vd"


@pytest.fixture(scope="module")
def ui_stack(make_stack: Callable[..., BackgroundStack]) -> BackgroundStack:
    """A stack of the UI tests' own: the first-run screen needs an instance nobody has
    registered on yet."""
    return make_stack(env={"MediaStorage__MaxFileSizeBytes": str(MEDIA_LIMIT)},
                      service_env={"auth": {"Auth__SetupCode": SETUP_CODE}})


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian package chromium; make system-deps)"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def owner() -> Owner:
    return Owner()


@pytest.fixture
def ui(browser, ui_stack: BackgroundStack) -> Iterator[Ui]:
    harness = Ui(browser, ui_stack.url)
    try:
        yield harness
        problems = harness.check()
        assert not problems, "the browser saw:\n" + "\n".join(problems)
    finally:
        harness.close()


def _api(stack: BackgroundStack, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{stack.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def ensure_owner(stack: BackgroundStack, owner: Owner) -> None:
    """Creates the account when a scenario runs without the first-run one before it."""
    if _api(stack, "GET", "/api/auth/registration-available")["registrationAvailable"]:
        _api(stack, "POST", "/api/auth/register",
             {"username": owner.username, "password": owner.password,
              "setupCode": SETUP_CODE})


def sign_in(page, watch, owner: Owner) -> None:
    watch.expect("GET", "/api/auth/me", 401)
    page.goto("/")
    form = page.locator("#view-signin")
    form.get_by_label("Username").fill(owner.username)
    form.get_by_label("Password").fill(owner.password)
    form.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Gallery").wait_for()
    assert_no_token_cookie(page)


def go(page, screen: str) -> None:
    page.locator("#topbar").get_by_role("link", name=screen, exact=True).click()
    page.locator(f"#view-{screen.lower()}").wait_for()


def record_progress(page) -> None:
    """Keeps every value each <progress> element takes, by its label or id."""
    page.evaluate("""() => {
      window.__progress = {};
      new MutationObserver((records) => {
        for (const record of records) {
          const bar = record.target;
          if (bar.tagName !== 'PROGRESS' || !bar.hasAttribute('value')) continue;
          const key = bar.getAttribute('aria-label') || bar.id;
          (window.__progress[key] ||= []).push(Number(bar.value) / Number(bar.max) * 100);
        }
      }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['value']});
    }""")


def progress_values(page, key: str) -> list[float]:
    return page.evaluate("(key) => (window.__progress || {})[key] || []", key)


def upload(page, *files: dict) -> None:
    page.locator("#upload-input").set_input_files(list(files))


def file(name: str, mime: str, data: bytes) -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def drop(page, *files: dict) -> None:
    """Drops files on the drop zone the way a browser does: dragenter, dragover, drop,
    with the files in the event's DataTransfer."""
    page.locator("#upload-dropzone").evaluate("""(zone, files) => {
        const transfer = new DataTransfer();
        for (const file of files) {
          const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
          transfer.items.add(new File([bytes], file.name, {type: file.mimeType}));
        }
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                                                  dataTransfer: transfer}));
        }
    }""", [{"name": f["name"], "mimeType": f["mimeType"],
            "data": base64.b64encode(f["buffer"]).decode()} for f in files])


def images_rendered(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('#gallery-grid img.media')]
        .map((img) => ({complete: img.complete, width: img.naturalWidth,
                        name: img.closest('.card').querySelector('.filename').textContent}))""")


def test_first_run_creates_the_account_and_closes_registration(ui, ui_stack, owner):
    page, watch = ui.open("first")
    page.goto("/")
    register = page.locator("#view-register")
    register.get_by_role("heading", name="Create your account").wait_for()
    rules = page.locator("#register-rules")
    assert "at least 12 characters" in rules.inner_text()
    assert "72 bytes" in rules.inner_text()
    # Every control in the page is labelled, in every screen.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, textarea, select')]
        .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label')
                       && c.getAttribute('aria-hidden') !== 'true')
        .map((c) => c.id || c.name)""")
    assert unlabelled == []

    # The server asks for the setup code: a wrong one is refused and said so.
    code = register.get_by_label("Setup code")
    assert code.is_visible()
    assert page.evaluate("() => document.activeElement.id") == "register-setup-code"
    watch.expect("POST", "/api/auth/register", 403)
    code.fill("not-the-code-at-all-0000")
    register.get_by_label("Username").fill(owner.username)
    register.get_by_label("Password", exact=True).fill(owner.password)
    register.get_by_label("Repeat the password").fill(owner.password)
    with page.expect_response("**/api/auth/register") as wrong_code:
        register.get_by_role("button", name="Create account").click()
    assert wrong_code.value.status == 403
    error = page.locator("#register-error")
    error.wait_for()
    assert error.inner_text() == "That setup code is not the right one."
    assert register.is_visible()
    code.fill(SETUP_CODE)

    # A guessable password: the server's own words are shown.
    watch.expect("POST", "/api/auth/register", 400)
    register.get_by_label("Password", exact=True).fill("password1234")
    register.get_by_label("Repeat the password").fill("password1234")
    with page.expect_response("**/api/auth/register") as refused:
        register.get_by_role("button", name="Create account").click()
    server_words = refused.value.json()["error"]
    assert server_words
    error = page.locator("#register-error")
    error.wait_for()
    assert error.inner_text() == server_words
    assert error.get_attribute("role") == "alert"
    screenshot(page, "first-run")

    register.get_by_label("Password", exact=True).fill(owner.password)
    register.get_by_label("Repeat the password").fill(owner.password)
    register.get_by_role("button", name="Create account").click()
    page.get_by_role("heading", name="Gallery").wait_for()
    assert page.locator("#whoami").inner_text() == owner.username
    page.locator("#gallery-empty").wait_for()
    assert_no_token_cookie(page)
    cookie = next(c for c in page.context.cookies() if c["name"] == AUTH_COOKIE)
    assert cookie["httpOnly"]
    assert cookie["secure"]
    assert cookie["sameSite"] == "Lax"
    screenshot(page, "gallery-empty")

    # Anyone else now meets the sign-in form, never the registration form.
    other, other_watch = ui.open("second")
    other_watch.expect("GET", "/api/auth/me", 401)
    other.goto("/")
    other.get_by_role("heading", name="Sign in to Tempo").wait_for()
    assert other.locator("#view-register").is_hidden()
    assert other.locator("#topbar").is_hidden()
    screenshot(other, "sign-in")


def test_two_images_upload_with_progress_and_render_in_the_gallery(ui, ui_stack, owner):
    ensure_owner(ui_stack, owner)
    page, watch = ui.open("uploader")
    sign_in(page, watch, owner)
    go(page, "Upload")
    page.locator("#view-upload").get_by_label("Caption (optional)").fill(XSS_CAPTION)
    record_progress(page)
    upload(page, file("sunrise.png", "image/png", png_bytes(900, 600)),
           file("finish line.jpg", "image/jpeg", jpeg_bytes(1024, 768)))
    done = page.locator("#upload-list .transfer.done")
    done.nth(1).wait_for()
    assert done.count() == 2
    for name in ("sunrise.png", "finish line.jpg"):
        row = page.locator("#upload-list .transfer", has_text=name)
        bar = row.locator("progress")
        assert bar.is_visible()
        assert bar.evaluate("(bar) => bar.value === bar.max")
        assert row.locator(".progress-text").inner_text() == "100%"
        assert row.locator(".result").inner_text().startswith("Uploaded")
        seen = progress_values(page, f"Upload of {name}")
        assert seen, name
        assert seen[-1] == 100, seen
        assert seen == sorted(seen), seen
    screenshot(page, "upload")

    go(page, "Gallery")
    cards = page.locator("#gallery-grid .card")
    cards.nth(1).wait_for()
    page.wait_for_function("""() => [...document.querySelectorAll('#gallery-grid img.media')]
        .every((img) => img.complete)""")
    rendered = {image["name"]: image for image in images_rendered(page)}
    assert rendered["sunrise.png"]["width"] == 900
    assert rendered["finish line.jpg"]["width"] == 1024
    # Newest first.
    assert cards.nth(0).locator(".filename").inner_text() == "finish line.jpg"
    # The caption is shown as the text it is.
    for index in range(2):
        assert cards.nth(index).locator(".caption").inner_text() == XSS_CAPTION
    assert page.locator("#gallery-grid img").count() == 2
    screenshot(page, "gallery")

    page.set_viewport_size(PHONE)
    page.reload()
    page.get_by_role("heading", name="Gallery").wait_for()
    cards.nth(1).wait_for()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "gallery-phone")


def test_svg_and_oversize_files_are_refused_with_the_servers_words(ui, ui_stack, owner):
    ensure_owner(ui_stack, owner)
    page, watch = ui.open("refused")
    sign_in(page, watch, owner)
    go(page, "Upload")
    watch.expect("POST", "/api/media", 415)
    watch.expect("POST", "/api/media", 413)
    answers = []
    page.on("response", lambda response: answers.append(response)
            if response.url.endswith("/api/media") and response.request.method == "POST"
            else None)
    oversize = b"\xff\xd8\xff\xe0" + bytes(MEDIA_LIMIT + 4096)
    upload(page, file("drawing.svg", "image/svg+xml", SVG_BYTES),
           file("too big.jpg", "image/jpeg", oversize))
    failed = page.locator("#upload-list .transfer.failed")
    failed.nth(1).wait_for()
    assert [answer.status for answer in answers] == [415, 413]
    words = [answer.json()["error"] for answer in answers]
    assert all(words), words
    for name, server_words in zip(("drawing.svg", "too big.jpg"), words, strict=True):
        result = page.locator("#upload-list .transfer", has_text=name).locator(".result")
        assert result.inner_text() == server_words
        assert result.get_attribute("role") == "alert"
    assert "svg" in words[0].lower()
    assert page.locator("#upload-list .transfer.done").count() == 0
    screenshot(page, "upload-refused")


def test_caption_edit_persists_and_delete_asks_first(ui, ui_stack, owner):
    ensure_owner(ui_stack, owner)
    page, watch = ui.open("editor")
    sign_in(page, watch, owner)
    go(page, "Upload")
    upload_form = page.locator("#view-upload")
    upload_form.get_by_label("Workout (optional)").fill("long-run-42")
    drop(page, file("trail.png", "image/png", png_bytes(320, 240, (20, 120, 60))),
         file("bridge.png", "image/png", png_bytes(320, 240, (120, 20, 160))))
    page.locator("#upload-list .transfer.done").nth(1).wait_for()
    go(page, "Gallery")

    # Filter by the workout: only its two items.
    page.locator("#gallery-workout").fill("long-run-42")
    page.get_by_role("button", name="Filter").click()
    page.locator("#gallery-grid .card").nth(1).wait_for()
    page.wait_for_function("() => document.querySelectorAll('#gallery-grid .card').length === 2")
    trail = page.locator("#gallery-grid .card", has_text="trail.png")
    trail.get_by_role("button", name="Edit caption of trail.png").click()
    editor = trail.get_by_role("textbox", name="Caption")
    assert editor.evaluate("(node) => node === document.activeElement")
    caption = f"Hill repeats {XSS_CAPTION} & <b>bold</b>"
    editor.fill(caption)
    trail.get_by_role("button", name="Save caption").click()
    trail.locator(".caption", has_text="Hill repeats").wait_for()
    assert trail.locator(".caption").inner_text() == caption

    page.reload()
    page.get_by_role("heading", name="Gallery").wait_for()
    trail = page.locator("#gallery-grid .card", has_text="trail.png")
    trail.wait_for()
    assert trail.locator(".caption").inner_text() == caption
    # The filter is part of the address, so it survived the reload.
    assert page.locator("#gallery-workout").input_value() == "long-run-42"
    page.wait_for_function("() => document.getElementById('gallery-loading').hidden")
    assert page.locator("#gallery-grid .card").count() == 2
    assert trail.locator("b").count() == 0

    # Delete asks first: cancelling keeps the item, confirming removes it for good.
    bridge = page.locator("#gallery-grid .card", has_text="bridge.png")
    bridge.get_by_role("button", name="Delete bridge.png").click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for()
    assert "bridge.png" in dialog.inner_text()
    screenshot(page, "delete-confirmation")
    dialog.get_by_role("button", name="Cancel").click()
    assert bridge.is_visible()
    bridge.get_by_role("button", name="Delete bridge.png").click()
    with page.expect_response(re.compile(r".*/api/media/[0-9a-f-]+$")) as deleted:
        dialog.get_by_role("button", name="Delete").click()
    assert deleted.value.status == 204
    bridge.wait_for(state="detached")
    page.reload()
    page.locator("#gallery-grid .card", has_text="trail.png").wait_for()
    assert page.locator("#gallery-grid .card", has_text="bridge.png").count() == 0


def test_gallery_loads_the_next_page_as_it_scrolls(ui, ui_stack, owner):
    ensure_owner(ui_stack, owner)
    page, watch = ui.open("scroll")
    sign_in(page, watch, owner)
    # Thirty small photos in two requests, straight from the page (same origin, its cookie).
    created = page.evaluate("""async (data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        let created = 0;
        for (let batch = 0; batch < 2; batch += 1) {
          const form = new FormData();
          form.append('workoutId', 'interval-session');
          for (let i = 0; i < 15; i += 1) {
            const name = `lap-${batch * 15 + i}.png`;
            form.append('file', new File([bytes], name, {type: 'image/png'}));
          }
          const response = await fetch('/api/media', {method: 'POST', body: form,
                                                       credentials: 'same-origin'});
          created += (await response.json()).items.length;
        }
        return created;
    }""", base64.b64encode(png_bytes(48, 36, (240, 160, 30))).decode())
    assert created == 30
    total = page.evaluate("""async () => (await (await fetch('/api/media?limit=200',
        {credentials: 'same-origin'})).json()).items.length""")
    page.reload()
    page.get_by_role("heading", name="Gallery").wait_for()
    cards = page.locator("#gallery-grid .card")
    page.wait_for_function("() => document.getElementById('gallery-loading').hidden")
    assert cards.count() == 24
    assert page.locator("#gallery-more").is_visible()
    page.mouse.wheel(0, 20_000)
    page.wait_for_function("(total) => document.querySelectorAll('#gallery-grid .card').length"
                           " === total", arg=total)
    page.wait_for_function("() => document.getElementById('gallery-loading').hidden")
    assert page.locator("#gallery-more").is_hidden()
    ids = page.evaluate("""() => [...document.querySelectorAll('#gallery-grid .card')]
        .map((card) => card.dataset.mediaId)""")
    assert len(set(ids)) == total
    names = cards.locator(".filename").all_inner_texts()
    # Newest first across the page boundary: the last lap uploaded comes first.
    assert names[0] == "lap-29.png"


def test_video_plays_and_seeks_with_range_requests(ui, ui_stack, owner):
    ensure_owner(ui_stack, owner)
    page, watch = ui.open("video")
    sign_in(page, watch, owner)
    ranges: list[tuple[int, str]] = []
    page.on("response", lambda response: ranges.append(
        (response.status, response.headers.get("content-range", "")))
        if response.url.endswith("/content") and response.request.headers.get("range")
        else None)
    go(page, "Upload")
    upload(page, file("strides.mp4", "video/mp4", mp4_bytes(64, 48, frames=20, fps=10)))
    page.locator("#upload-list .transfer.done").wait_for()
    go(page, "Gallery")
    video = page.locator("#gallery-grid .card", has_text="strides.mp4").locator("video")
    video.wait_for()
    assert video.get_attribute("controls") is not None
    # Seek to 1.2 s and read back the frame shown: the moving bar is at x = 48..53 in
    # frame 12, so the pixels there are white and the ones beside are not.
    seek = video.evaluate("""(video) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no seek: ' + video.readyState)), 10000);
        video.addEventListener('error', () => reject(new Error(
          'video error ' + (video.error && video.error.message))));
        const go = () => {
          video.addEventListener('seeked', () => {
            clearTimeout(timer);
            const canvas = document.createElement('canvas');
            canvas.width = video.videoWidth;
            canvas.height = video.videoHeight;
            const context = canvas.getContext('2d');
            context.drawImage(video, 0, 0);
            const row = context.getImageData(0, 8, canvas.width, 1).data;
            resolve({duration: video.duration, time: video.currentTime,
                     width: video.videoWidth, bar: row[50 * 4], beside: row[30 * 4]});
          }, {once: true});
          video.currentTime = 1.2;
        };
        if (video.readyState >= 1) go();
        else video.addEventListener('loadedmetadata', go, {once: true});
    })""")
    assert seek["duration"] == pytest.approx(2.0)
    assert seek["time"] == pytest.approx(1.2)
    assert seek["width"] == 64
    assert seek["bar"] > 200, seek
    assert seek["beside"] < 200, seek
    assert any(status == 206 and content_range.startswith("bytes ")
               for status, content_range in ranges), ranges
    screenshot(page, "gallery-video")


def test_strava_import_shows_progress_then_the_summary(ui, ui_stack, owner, tmp_path):
    ensure_owner(ui_stack, owner)
    page, watch = ui.open("import")
    sign_in(page, watch, owner)
    go(page, "Import")
    polled = []
    page.on("response", lambda response: polled.append(response)
            if re.search(r"/api/imports/[^/]+$", response.url) and response.status == 200
            else None)
    # Something that is not a ZIP is refused with the server's words.
    watch.expect("POST", "/api/imports", 415)
    bogus = tmp_path / "export_notes.zip"
    bogus.write_text("these are my running notes, not an archive\n")
    page.get_by_label("Strava export (.zip)").set_input_files(str(bogus))
    with page.expect_response(lambda response: response.url.endswith("/api/imports")
                              and response.request.method == "POST") as refused:
        page.get_by_role("button", name="Start import").click()
    assert refused.value.status == 415
    page.locator("#import-error").wait_for()
    assert page.locator("#import-error").inner_text() == refused.value.json()["error"]

    record_progress(page)
    archive = tmp_path / "export_12345.zip"
    archive.write_bytes(strava_export())
    page.get_by_label("Strava export (.zip)").set_input_files(str(archive))
    page.get_by_role("button", name="Start import").click()
    summary = page.locator("#import-summary")
    summary.wait_for(timeout=60_000)
    assert page.locator("#import-status").inner_text() == "Import finished."
    assert progress_values(page, "import-upload-progress")[-1] == 100
    assert page.locator("#import-process-progress").evaluate("(bar) => bar.value === bar.max")
    final = polled[-1].json()
    assert final["status"] == "done"
    shown = dict(zip(summary.locator("dt").all_inner_texts(),
                     summary.locator("dd").all_inner_texts(), strict=True))
    expected = final["summary"]
    assert shown["Activities found"] == str(expected["activitiesFound"])
    assert shown["Runs imported"] == str(expected["activitiesImported"])
    assert shown["Photos and videos imported"] == str(expected["mediaImported"])
    assert shown["Skipped: not a run"] == str(expected["skipped"]["notRun"])
    missing = str(expected["skipped"]["missingFile"])
    assert shown["Skipped: file missing from the archive"] == missing
    assert expected["activitiesImported"] == 2
    assert expected["mediaImported"] == 1
    assert expected["skipped"]["notRun"] == 1
    history = page.locator("#import-history li")
    history.first.wait_for()
    assert "Done" in history.first.inner_text()
    screenshot(page, "import")

    go(page, "Gallery")
    imported = page.locator("#gallery-grid .card", has_text="track.jpg")
    imported.wait_for()
    assert imported.get_by_role("button", name="Show only workout strava:1001").is_visible()

    # "Download my data" hands over the export: a ZIP with the manifest and the photo.
    go(page, "Account")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download my data").click()
    saved = tmp_path / "export.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        filenames = {item["filename"] for item in manifest["media"]}
        assert "track.jpg" in filenames
        assert all(archive.getinfo(item["path"]).file_size == item["sizeBytes"]
                   for item in manifest["media"])


def test_sessions_can_be_revoked_password_changed_and_signed_out(ui, ui_stack, owner):
    ensure_owner(ui_stack, owner)
    main, main_watch = ui.open("main")
    laptop, laptop_watch = ui.open("laptop")
    phone, phone_watch = ui.open("phone", viewport=PHONE)
    sign_in(main, main_watch, owner)
    sign_in(laptop, laptop_watch, owner)
    go(laptop, "Upload")
    # Keyboard only: type, Tab, type, Enter.
    phone_watch.expect("GET", "/api/auth/me", 401)
    phone.goto("/")
    phone.locator("#signin-username").wait_for()
    phone.keyboard.type(owner.username)
    phone.keyboard.press("Tab")
    phone.keyboard.type(owner.password)
    phone.keyboard.press("Enter")
    phone.get_by_role("heading", name="Gallery").wait_for()
    for screen in ("Upload", "Import", "Account"):
        go(phone, screen)
        if screen == "Account":
            phone.locator("#sessions-list li").first.wait_for()
        assert phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(phone, f"{screen.lower()}-phone")
    go(phone, "Gallery")

    go(main, "Account")
    sessions = main.locator("#sessions-list li")
    laptop_row = sessions.filter(has=main.locator('[title*="TempoUiTest/laptop"]'))
    laptop_row.wait_for()
    assert "This device" in sessions.filter(
        has=main.locator('[title*="TempoUiTest/main"]')).inner_text()
    screenshot(main, "account")

    # Revoke the laptop from the list: its next action, an upload, is refused and it
    # is back at the sign-in form.
    laptop_row.get_by_role("button", name=re.compile("^Sign out")).click()
    laptop_row.wait_for(state="detached")
    laptop_watch.expect("POST", "/api/media", 401)
    upload(laptop, file("late.png", "image/png", png_bytes()))
    laptop.get_by_role("heading", name="Sign in to Tempo").wait_for()
    assert "session has ended" in laptop.locator("#notice").inner_text()

    # A wrong current password is refused with the server's words; the right one works
    # and signs every other device out.
    form = main.locator("#password-form")
    new_password = "violet harbour compass 2031"
    main_watch.expect("POST", "/api/auth/password", 400)
    form.get_by_label("Current password").fill("not the password at all")
    form.get_by_label("New password", exact=True).fill(new_password)
    form.get_by_label("Repeat the new password").fill(new_password)
    with main.expect_response("**/api/auth/password") as refused:
        form.get_by_role("button", name="Change password").click()
    main.locator("#password-error").wait_for()
    assert main.locator("#password-error").inner_text() == refused.value.json()["error"]
    form.get_by_label("Current password").fill(owner.password)
    form.get_by_label("New password", exact=True).fill(new_password)
    form.get_by_label("Repeat the new password").fill(new_password)
    form.get_by_role("button", name="Change password").click()
    main.locator("#password-success").wait_for()
    owner.password = new_password
    main.wait_for_function("() => document.querySelectorAll('#sessions-list li').length === 1")
    assert "This device" in sessions.inner_text()
    assert_no_token_cookie(main)

    phone_watch.expect("GET", "/api/auth/sessions", 401)
    phone.locator("#topbar").get_by_role("link", name="Account").click()
    phone.get_by_role("heading", name="Sign in to Tempo").wait_for()
    screenshot(phone, "signed-out-phone")

    # The main browser is still signed in after a reload, then signs out for good.
    main.reload()
    main.get_by_role("heading", name="Account").wait_for()
    main.get_by_role("button", name="Sign out", exact=True).click()
    main.get_by_role("heading", name="Sign in to Tempo").wait_for()
    main_watch.expect("GET", "/api/auth/me", 401)
    main.reload()
    main.get_by_role("heading", name="Sign in to Tempo").wait_for()
    assert not [c for c in main.context.cookies() if c["name"] == AUTH_COOKIE]


def test_lockout_says_when_to_try_again(ui, ui_stack, owner):
    ensure_owner(ui_stack, owner)
    page, watch = ui.open("lockout")
    watch.expect("GET", "/api/auth/me", 401)
    watch.expect("POST", "/api/auth/login", 401)
    watch.expect("POST", "/api/auth/login", 429)
    page.goto("/")
    form = page.locator("#view-signin")
    form.get_by_label("Username").fill("nobody.here")
    for _ in range(10):
        form.get_by_label("Password").fill("wrong password again")
        with page.expect_response("**/api/auth/login") as answer:
            form.get_by_role("button", name="Sign in").click()
        if answer.value.status == 429:
            break
    assert answer.value.status == 429
    retry_after = answer.value.headers["retry-after"]
    assert int(retry_after) > 0
    error = page.locator("#signin-error")
    page.wait_for_function(
        "() => /try again in/.test(document.getElementById('signin-error').textContent)")
    assert answer.value.json()["error"] in error.inner_text()
    assert re.search(r"try again in \d+ (second|minute)s?, at ", error.inner_text())
    assert form.get_by_role("button", name="Sign in").is_disabled()
    screenshot(page, "sign-in-locked")


def test_the_watch_fails_on_csp_violations_console_errors_dialogs_and_http_errors(
        browser, ui_stack, owner):
    """The guard every scenario relies on does catch what it is there for."""
    ensure_owner(ui_stack, owner)
    harness = Ui(browser, ui_stack.url)
    try:
        page, watch = harness.open("guard")
        watch.expect("GET", "/api/auth/me", 401)
        page.goto("/")
        page.locator("#view-signin").wait_for()
        assert harness.check() == []
        # An inline style attribute is refused by the gateway's CSP.
        page.evaluate("() => document.body.setAttribute('style', 'color: red')")
        page.evaluate("() => console.error('something broke')")
        page.evaluate("() => { setTimeout(() => alert('xss'), 0); }")
        page.evaluate("() => fetch('/api/media').then(() => null)")
        page.evaluate("() => { const i = document.createElement('img');"
                      " i.src = 'x'; document.body.append(i); }")
        page.wait_for_function("() => (window.__cspViolations || []).length > 0")
        page.wait_for_timeout(300)
        problems = "\n".join(harness.check())
        assert "CSP violation: style-src" in problems
        assert "console error: something broke" in problems
        assert "script dialog alert: 'xss'" in problems
        assert "unexpected HTTP 401 for GET" in problems
        assert "parsed as HTML" in problems
    finally:
        harness.close()
