"""docs/nginx.conf under Debian's real nginx, serving a real published site."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from email.message import Message

import pytest

from tests.fixtures.site import NginxServer

pytestmark = pytest.mark.nginx


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_index_and_json_are_served_with_short_revalidated_cache(nginx_site: NginxServer) -> None:
    status, headers, body = get(nginx_site.base_url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == (nginx_site.public / "index.html").read_bytes()
    assert headers["Cache-Control"] == "public, max-age=60, must-revalidate"
    assert headers["Server"] == "nginx"  # server_tokens off: no version
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = get(nginx_site.base_url + "/manifest.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "public, max-age=60, must-revalidate"
    assert json.loads(body)["kind"] == "manifest"


def test_json_and_html_are_gzipped_for_clients_that_accept_it(nginx_site: NginxServer) -> None:
    for path in ("/history_BTC-USDT_1h.json", "/BTC-USDT_1h.html"):
        status, headers, body = get(nginx_site.base_url + path, {"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Content-Encoding"] == "gzip", path
        assert "Accept-Encoding" in headers["Vary"]
        assert gzip.decompress(body) == (nginx_site.public / path.lstrip("/")).read_bytes()


def test_hashed_assets_are_cached_long(nginx_site: NginxServer) -> None:
    css = next((nginx_site.public / "assets").glob("site.*.css")).name
    status, headers, _ = get(f"{nginx_site.base_url}/assets/{css}", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Content-Encoding"] == "gzip"


def test_revalidation_answers_304(nginx_site: NginxServer) -> None:
    _, headers, _ = get(nginx_site.base_url + "/status.json")
    status, _, body = get(nginx_site.base_url + "/status.json", {"If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"")


@pytest.mark.parametrize("path", ["/history", "/history/", "/history/BTC-USDT?tf=1h", "/predict", "/predict/x",
                                  "/predict?symbol=BTC/USDT"])
def test_retired_api_paths_are_gone(nginx_site: NginxServer, path: str) -> None:
    status, headers, body = get(nginx_site.base_url + path)
    assert status == 410
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"] == "gone"
    assert "max-age=31536000" not in (headers["Cache-Control"] or "")


def test_static_files_named_like_the_old_api_are_not_gone(nginx_site: NginxServer) -> None:
    assert get(nginx_site.base_url + "/history_BTC-USDT_1h.json")[0] == 200
    assert get(nginx_site.base_url + "/prediction_BTC-USDT_1h.json")[0] == 200


def test_missing_page_gets_the_404_page(nginx_site: NginxServer) -> None:
    status, headers, body = get(nginx_site.base_url + "/DOGE-USDT_1h.html")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert body == (nginx_site.public / "404.html").read_bytes()
    assert headers["Cache-Control"] is None  # errors are not cached
    assert b"nginx/" not in body


def test_dotfiles_and_temp_files_are_not_served(nginx_site: NginxServer) -> None:
    (nginx_site.public / ".index.html.abc.tmp").write_text("partial")
    assert get(nginx_site.base_url + "/.index.html.abc.tmp")[0] == 404
    assert get(nginx_site.base_url + "/.nojekyll")[0] == 404
    # The fallback staging area inside public/ (when no sibling can be made) is never served either.
    staged = nginx_site.public / ".staging" / "run-abcd1234" / "index.html"
    staged.parent.mkdir(parents=True)
    staged.write_text("<p>half a generation</p>")
    assert get(nginx_site.base_url + "/.staging/run-abcd1234/index.html")[0] == 404
    assert get(nginx_site.base_url + "/index.html")[0] == 200


def test_publish_stages_outside_the_served_directory(nginx_site: NginxServer) -> None:
    """The normal staging area is a sibling of public/: nothing staged is under nginx's root."""
    from coin_core.publish.staging import staging_root

    root = staging_root(nginx_site.public)
    assert root == nginx_site.public.parent / f".{nginx_site.public.name}.staging"
    assert nginx_site.public not in root.parents
