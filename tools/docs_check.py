"""Check the built docs site in a real browser (Debian's headless Chromium, driven over the DevTools protocol).

For every page: internal links and anchors that lead nowhere, and resources loaded from outside the site (all read
from the HTML files). For the pages with notebook or prose content, opened in Chromium: math that MathJax left as
TeX source (`$$`, `\\(` or `\\[` in the visible text outside code), images that did not load, requests that
failed or left the machine. Screenshots of the home page and the STDiT page. Prints one JSON line; exit 1 when any
count is not zero.

    python tools/docs_check.py _docs --screenshots docs/screenshots
"""
import argparse, base64, html.parser, json, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

SCREENSHOTS = {"home": "index.html", "stdit": "03_stdit.html"}
_BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium():
    "The Chromium binary (`CHROMIUM` or on PATH), or None."
    for name in ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) + list(_BROWSERS):
        path = shutil.which(name)
        if path: return path
    return None


# ---- static checks: every page, every link -------------------------------------------------------------------

class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.ids, self.links, self.resources = set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key): self.ids.add(a[key])
        if tag == "a" and a.get("href"): self.links.append(a["href"])
        if tag in ("img", "script", "iframe", "source") and a.get("src"): self.resources.append(a["src"])
        if tag == "link" and a.get("href") and a.get("rel") != "canonical": self.resources.append(a["href"])


def _parse(path: Path) -> _Refs:
    p = _Refs(); p.feed(path.read_text(encoding="utf-8", errors="replace")); return p


def static_check(site: Path) -> dict:
    "Broken internal links (missing file or anchor), missing local resources, and resources from the network."
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)
    parsed = {p.resolve(): _parse(p) for p in pages}
    broken, missing, external = [], [], []
    for page, refs in parsed.items():
        for href in refs.links:
            u = urlparse(href)
            if u.scheme or href.startswith("//") or href.startswith("mailto:"): continue
            path, frag = urldefrag(href)
            target = (page.parent / unquote(path)).resolve() if path else page
            if target.is_dir(): target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site.resolve())}: {href}")
            elif frag and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(frag) not in ids: broken.append(f"{page.relative_to(site.resolve())}: {href} (no anchor)")
        for src in refs.resources:
            u = urlparse(src)
            if u.scheme in ("http", "https") or src.startswith("//"):
                external.append(f"{page.relative_to(site.resolve())}: {src}")
            elif not u.scheme and not (page.parent / unquote(urldefrag(src)[0].split("?")[0])).resolve().exists():
                missing.append(f"{page.relative_to(site.resolve())}: {src}")
    return {"pages": len(pages), "broken_links": broken, "missing_resources": missing, "external_resources": external}


# ---- the browser ----------------------------------------------------------------------------------------------

class Chromium:
    "A headless Chromium and one tab, spoken to over the DevTools protocol (websocket-client from PyPI)."

    def __init__(self, binary: str, width: int = 1400, height: int = 1000):
        import websocket
        self.profile = tempfile.mkdtemp(prefix="docs-check-")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--allow-file-access-from-files", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url, t0 = None, time.time()
        while url is None and time.time() - t0 < 30:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None: break
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m: url = m.group(1)
        if url is None: self.close(); raise RuntimeError(f"{binary} did not start its DevTools endpoint")
        self.ws = websocket.create_connection(url, timeout=60)
        self.next_id, self.events = 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"): self.call(f"{domain}.enable", session=True)

    def call(self, method, session=False, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session: msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply: raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, url: str, timeout: float = 30):
        "Navigate and wait for the load event."
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        t0 = time.time()
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.time() - t0 > timeout: raise TimeoutError(f"{url} did not load in {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r: raise RuntimeError(f"{expression[:60]}...: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def screenshot(self, path: Path):
        self.js("window.scrollTo(0, 0)")
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self):
        try: self.ws.close()
        except Exception: pass
        self.proc.terminate()
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


# What the page shows, once MathJax is done: the text outside code blocks with raw TeX delimiters, the
# images that did not load, and the number of formulas MathJax typeset.
_PAGE_JS = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await new Promise(r => setTimeout(r, 50));
  const main = document.querySelector('main') || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
  const text = clone.innerText || clone.textContent;
  const raw = [];
  for (const pat of [/\$\$/g, /\\\(/g, /\\\[/g]) { for (const m of text.matchAll(pat)) {
      raw.push(text.slice(Math.max(0, m.index - 40), m.index + 40).replace(/\s+/g, ' ')); } }
  const images = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  return {raw_math: raw, missing_images: images, formulas: document.querySelectorAll('mjx-container').length,
          title: document.title};
})()
"""


def browser_check(site: Path, binary: str, screenshots: Path | None) -> dict:
    "Open the content pages in Chromium: raw math, images that did not load, failed or outside requests."
    site = site.resolve()
    pages = sorted(p for p in site.glob("*.html") if p.name not in ("genindex.html", "search.html", "py-modindex.html"))
    raw, images, failed, outside, formulas = [], [], [], [], {}
    browser = Chromium(binary)
    try:
        for page in pages:
            browser.open(page.as_uri())
            r = browser.js(_PAGE_JS)
            raw += [f"{page.name}: ...{t}..." for t in r["raw_math"]]
            images += [f"{page.name}: {s}" for s in r["missing_images"]]
            formulas[page.name] = r["formulas"]
            for e in browser.events:
                m, prm = e.get("method"), e.get("params", {})
                if m == "Network.loadingFailed" and prm.get("type") not in ("Ping",):
                    failed.append(f"{page.name}: {prm.get('errorText')} ({prm.get('type')})")
                if m == "Network.requestWillBeSent":
                    url = prm.get("request", {}).get("url", "")
                    if not url.startswith(("file:", "data:", "blob:", "about:")): outside.append(f"{page.name}: {url}")
            shot = [k for k, v in SCREENSHOTS.items() if v == page.name]
            if screenshots is not None and shot: browser.screenshot(screenshots / f"{shot[0]}.png")
        # search works from the folder: the index page's search box finds STDiT
        browser.open((site / "search.html").as_uri() + "?q=STDiT")
        hits = browser.js("(async () => { for (let i = 0; i < 100; i++) { const n = document.querySelectorAll("
                          "'#search-results li').length; if (n) return n; await new Promise(r => setTimeout(r, 100)); }"
                          " return 0; })()")
    finally:
        browser.close()
    return {"browser_pages": len(pages), "raw_math": raw, "missing_images": images, "failed_requests": failed,
            "outside_requests": outside, "formulas": sum(formulas.values()), "search_hits_stdit": hits}


def check(site: Path, screenshots: Path | None = None, binary: str | None = None) -> dict:
    site = Path(site)
    if not (site / "index.html").is_file(): raise SystemExit(f"{site}/index.html is missing: run `make docs` first")
    binary = binary or find_chromium()
    if binary is None: raise SystemExit("no Chromium: `apt-get install chromium` (Debian), or set CHROMIUM=/path")
    t0 = time.time()
    r = {**static_check(site), **browser_check(site, binary, screenshots)}
    r["seconds"] = round(time.time() - t0, 1)
    if screenshots is not None: r["screenshots"] = [str(screenshots / f"{k}.png") for k in SCREENSHOTS]
    return r


COUNTED = ("broken_links", "missing_resources", "external_resources", "raw_math", "missing_images",
           "failed_requests", "outside_requests")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("site", nargs="?", default="_docs")
    p.add_argument("--screenshots", default=None, help="folder for home.png and stdit.png")
    a = p.parse_args(argv)
    r = check(Path(a.site), Path(a.screenshots) if a.screenshots else None)
    bad = {k: r[k] for k in COUNTED if r[k]}
    for k, v in bad.items():
        print(f"{k}: {len(v)}", *v[:20], sep="\n  ", file=sys.stderr)
    print(json.dumps({**{k: (len(v) if k in COUNTED else v) for k, v in r.items()}}))
    return 1 if bad or not r["search_hits_stdit"] else 0


if __name__ == "__main__":
    sys.exit(main())
