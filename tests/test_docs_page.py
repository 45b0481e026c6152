"""The API reference page at `<base>/docs` as a browser shows it: the generated gateway on
real nginx in the test network namespace (it has a loopback and no route out), Swagger UI's
files from the npm install of the page's lock file that scripts/setup.sh makes
(build/docs-page; compose's `docs` one-shot installs the same lock file), and headless
Chromium run inside the same namespace. The test reads the DOM after the page's scripts ran,
the browser's own network log and console, and the gateway's access log."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from protoc_gen_crud.devstack import docs_assets
from protoc_gen_crud.targets import compose, openresty, readme

from .support import (
    EXAMPLES,
    EXAMPLES_DIR,
    call,
    chromium_argv,
    from_textproto,
    model_of,
    serving_gateway,
    write_tree,
)

ORIGIN = "http://proxy"  # the gateway's name in the namespace's hosts file, port 80
# What a person would see the page do, in the browser's terms; NetLog's key of requests that
# belong to no page (the browser's own update and time checks, which fail here).
BROWSER_OWN = "null null"


def chromium(netns, profile: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium inside the namespace; it waits (in virtual time) until the page's
    network is idle, so the DOM it dumps is the one Swagger UI rendered."""
    return netns.run(*chromium_argv(profile, "--virtual-time-budget=20000", *extra, url),
                     timeout=180)


class Operations(HTMLParser):
    """The (method, path) of each operation Swagger UI rendered, read from the text a person
    sees (the method badge and the path beside it), plus each link's target by id."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[tuple[str, str]] = []
        self.links: dict[str, str] = {}
        self.ids: set[str] = set()
        self._reading: str | None = None
        self._method = ""
        self._text = ""
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"] or "")
            if tag == "a":
                self.links[found["id"] or ""] = found.get("href") or ""
        classes = (found.get("class") or "").split()
        if self._reading:
            self._depth += tag != "wbr"
        elif "opblock-summary-method" in classes or "opblock-summary-path" in classes:
            self._reading, self._text, self._depth = classes[0], "", 1

    def handle_endtag(self, tag: str) -> None:
        if not self._reading or tag == "wbr":
            return
        self._depth -= 1
        if self._depth:
            return
        text = self._text.replace("\u200b", "").strip()
        if self._reading == "opblock-summary-method":
            self._method = text
        else:
            self.operations.append((self._method, text))
        self._reading = None

    def handle_data(self, data: str) -> None:
        if self._reading:
            self._text += data


def expected_operations(backend) -> set[tuple[str, str]]:
    """Every route the gateway serves, from the model (not from the OpenAPI document)."""
    found = set()
    for e in backend.entities:
        route = e.base_path + e.path
        found |= {(m, route) for m in ("GET", "POST", "PATCH", "DELETE")}
        if len(e.primary_key) == 1:
            found |= {(m, route + "/{id}") for m in ("GET", "PATCH", "PUT", "DELETE")}
    found |= {(ep.method, ep.base_path + ep.path) for ep in backend.endpoints}
    found |= {("GET", f"/stream/sse/{e.name}") for e in backend.streamed}
    if backend.streamed:  # several entities on one stream, and the browsers' stream cookie
        found |= {("GET", "/stream/sse"), ("POST", "/stream/session"),
                  ("DELETE", "/stream/session")}
    return found


@dataclass
class Loaded:
    name: str
    backend: object
    base: str
    dom: str
    console: list[str]
    requests: list[dict]
    access_log: list[dict]
    screenshot: Path


def page_requests(netlog: Path) -> list[dict]:
    """Every URL request Chromium started for a page (its NetLog), with the page's key."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"] for e in log["events"]
            if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("network_isolation_key") != BROWSER_OWN]


@pytest.fixture(scope="module", params=EXAMPLES)
def loaded(request, test_host, tmp_path_factory):
    name = request.param
    assets = docs_assets()
    if assets is None:
        pytest.fail("the reference page's npm install is missing: run scripts/setup.sh --system")
    folder = tmp_path_factory.mktemp(f"docs-{name}")
    out = write_tree(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["openresty"]),
                     folder / "out")
    backend = model_of(name)
    base = sorted({e.base_path for e in backend.entities})[0]
    with serving_gateway(test_host, out / "openresty", docs=assets) as gateway:
        netlog = folder / "netlog.json"
        # The picture is for people (CRUD_SCREENSHOT_DIR keeps it; else pytest's tmp folder).
        shots = Path(os.environ.get("CRUD_SCREENSHOT_DIR") or folder)
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / f"docs-{name}.png"
        shot.unlink(missing_ok=True)
        done = chromium(test_host, folder / "profile", f"{ORIGIN}{base}/docs",
                        f"--log-net-log={netlog}", "--window-size=1280,2400",
                        f"--screenshot={shot}", "--dump-dom")
        assert done.returncode == 0, done.stderr[-3000:]
        # The page's console messages (not those of the browser's own chrome:// pages).
        console = [line for line in done.stderr.splitlines()
                   if ":CONSOLE" in line and f"source: {ORIGIN}/" in line]
        access = [json.loads(line) for line in gateway.access_log().splitlines()
                  if line.startswith("{")]
        yield Loaded(name, backend, base, done.stdout, console, page_requests(netlog), access,
                     shot)


def test_the_page_shows_every_route_of_the_backend(loaded):
    page = Operations()
    page.feed(loaded.dom)
    assert set(page.operations) == expected_operations(loaded.backend)
    assert len(page.operations) == len(set(page.operations))
    # It links to the generated README, and Swagger UI replaced the "files missing" notice.
    assert page.links["crud-readme"] == f"{loaded.base}/docs/README.md"
    assert "crud-docs-missing" not in page.ids
    shot = loaded.screenshot.read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 50_000


def test_nothing_is_loaded_from_another_origin(loaded):
    """Every request the page made went to the gateway; the browser reported no refused
    load or script error; the gateway served Swagger UI's files and the document."""
    urls = [r["url"] for r in loaded.requests]
    assert urls and all(urlsplit(u)._replace(path="", query="", fragment="").geturl() == ORIGIN
                        for u in urls), urls
    assert not [line for line in loaded.console
                if "Content Security Policy" in line or "Refused" in line
                or "Uncaught" in line], loaded.console
    served = {(r["uri"], r["status"]) for r in loaded.access_log}
    base = loaded.base
    for path in (f"{base}/docs", f"{base}/docs/init.js", f"{base}/openapi.json",
                 *(f"{base}/docs/assets/{a}" for a in openresty.DOCS_ASSETS)):
        assert (path, 200) in served, path


def test_the_page_forbids_other_origins_and_serves_only_the_assets_it_uses(loaded, test_host):
    reply = call(test_host, "GET", f"{loaded.base}/docs")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1)
                  for part in reply.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "font-src"):
        assert policy[directive] == "'self'", directive
    assert policy["img-src"] == "'self' data:"
    asset = call(test_host, "GET", f"{loaded.base}/docs/assets/swagger-ui-bundle.js")
    assert asset.status == 200 and asset.headers["content-type"] == "text/javascript"
    # swagger-ui-dist's own index.html would load the petstore from the internet.
    assert call(test_host, "GET", f"{loaded.base}/docs/assets/index.html").status == 404
    assert call(test_host, "POST", f"{loaded.base}/docs").status == 405


def test_the_readme_link_serves_the_generated_readme(loaded, test_host):
    reply = call(test_host, "GET", f"{loaded.base}/docs/README.md")
    assert reply.status == 200
    assert reply.body.decode() == readme.text(loaded.backend)


def test_compose_installs_the_pinned_page_files_once(tmp_path):
    """The compose `docs` one-shot's own command, run by sh on the generated docs/ folder
    (its paths moved into tmp_path; npm offline, from the cache setup.sh's install filled):
    it installs swagger-ui-dist at the version the lock pins, a second start installs
    nothing, and the gateway mounts the result read-only as its docs/ folder."""
    files = from_textproto(EXAMPLES_DIR / "product" / "product.textproto",
                           ["compose", "openresty"])
    out = write_tree(files, tmp_path / "out")
    services = yaml.safe_load(files["compose.yml"])["services"]
    volume = tmp_path / "volume"
    volume.mkdir()
    script = services["docs"]["command"][2].replace(
        "/src", str(out / "docs")).replace(compose.DOCS_VOLUME_DIR, str(volume))
    env = {**os.environ, "npm_config_offline": "true", "npm_config_update_notifier": "false"}
    first = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                           timeout=300)
    assert first.returncode == 0 and "failed" not in first.stdout, first.stdout + first.stderr
    pinned = json.loads(files["docs/package.json"])["dependencies"]["swagger-ui-dist"]
    installed = volume / "node_modules" / "swagger-ui-dist"
    assert json.loads((installed / "package.json").read_text())["version"] == pinned
    assert all((installed / asset).is_file() for asset in openresty.DOCS_ASSETS)
    second = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                            timeout=300)
    assert second.stdout.strip() == "docs: up to date"
    assert "docs:/srv/gateway/docs:ro" in services["proxy"]["volumes"]
    assert services["proxy"]["depends_on"]["docs"] == {
        "condition": "service_completed_successfully"}
