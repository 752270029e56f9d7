"""A loopback Splunk REST search API held to shared/contracts/splunk/README.md.

It cannot run SPL: a test registers the rows (all values strings, as Splunk sends them)
or the error each search string yields. It serves what both canaryctl's provider and the
official `splunk-sdk` client use: server info (Atom XML or JSON), login, streaming
export, one-shot, and jobs with state and paged results, on v1 and v2 paths, with
Bearer, Splunk-session and Basic auth. Requests outside the documented shapes are
recorded in `violations`.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

from tests.fakes.loopback_server import serve_loopback, stop_loopback

ATOM_NS = "http://www.w3.org/2005/Atom"
S_NS = "http://dev.splunk.com/ns/rest"
V2_SINCE = (9, 0, 2)


@dataclass
class SearchError:
    text: str
    status: int = 400
    type: str = "FATAL"


@dataclass
class Job:
    sid: str
    search: str
    rows: list[dict[str, Any]]
    error: SearchError | None
    polls_left: int


@dataclass
class SeenRequest:
    method: str
    path: str
    form: dict[str, str]
    authorization: str


def _is_time(text: str) -> bool:
    if not text:
        return False
    try:
        float(text)
        return True
    except ValueError:
        # relative (-15m, -1h@h, now, rt) forms
        return text in ("now", "rt", "0") or text[0] in "-+@" or text.startswith("rt")


def _atom_dict(content: dict[str, Any]) -> str:
    keys = "".join(
        f'<s:key name="{escape(k)}">'
        + (_atom_dict(v) if isinstance(v, dict) else escape(str(v)))
        + "</s:key>"
        for k, v in content.items()
    )
    return f"<s:dict>{keys}</s:dict>"


@dataclass
class SplunkFake:
    token: str = ""
    username: str = ""
    password: str = ""
    version: str = "9.1.2"
    # normalised SPL -> rows, or SearchError
    searches: dict[str, list[dict[str, Any]] | SearchError] = field(default_factory=dict)
    # How many state polls a job reports RUNNING before DONE.
    job_polls: int = 1
    violations: list[str] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)
    url: str = ""
    jobs: dict[str, Job] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    # --- lifecycle ---

    def start(self) -> str:
        self._server, self.url = serve_loopback(self._handle)
        return self.url

    def stop(self) -> None:
        stop_loopback(self._server)

    @property
    def v2(self) -> bool:
        parts = tuple(int(p) for p in self.version.split("."))
        return parts >= V2_SINCE

    # --- helpers ---

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: str | bytes,
        content_type: str = "application/json",
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        # splunk-sdk closes a connection before reading the body unless told it is kept.
        h.send_header("Connection", "Keep-Alive")
        h.end_headers()
        h.wfile.write(data)

    def _messages(
        self, h: BaseHTTPRequestHandler, status: int, kind: str, text: str, json_mode: bool
    ) -> None:
        if json_mode:
            self._send(h, status, json.dumps({"messages": [{"type": kind, "text": text}]}))
        else:
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<response><messages>'
                f'<msg type="{kind}">{escape(text)}</msg></messages></response>'
            )
            self._send(h, status, xml, "text/xml; charset=UTF-8")

    def _authorized(self, header: str) -> bool:
        if header.startswith("Bearer "):
            return bool(self.token) and header[7:] == self.token
        if header.startswith("Splunk "):
            return header[7:] in self.sessions
        if header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return bool(self.username) and (user, pw) == (self.username, self.password)
        return False

    def _outcome(self, search: str) -> list[dict[str, Any]] | SearchError:
        outcome = self.searches.get(search.strip())
        if outcome is None:
            return []  # a search that matches nothing
        if isinstance(outcome, list):
            for row in outcome:
                for key, value in row.items():
                    ok = isinstance(value, str) or (
                        isinstance(value, list) and all(isinstance(v, str) for v in value)
                    )
                    if not ok:
                        raise AssertionError(
                            f"Splunk sends strings only; row field {key}={value!r}"
                        )
        return outcome

    def _check_search_form(self, form: dict[str, str], where: str) -> None:
        search = form.get("search", "")
        if not (search.startswith("search ") or search.startswith("|")):
            self._violation(f"{where}: search must start with 'search ' or '|': {search!r}")
        for key in ("earliest_time", "latest_time"):
            if key in form and not _is_time(form[key]):
                self._violation(f"{where}: {key}={form[key]!r} is not epoch or relative time")

    # --- routing ---

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode() if length else ""
        form = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        if raw:
            form.update(urllib.parse.parse_qsl(raw, keep_blank_values=True))
        auth = h.headers.get("Authorization", "")
        json_mode = form.get("output_mode") == "json"
        path = split.path.rstrip("/")
        # splunk-sdk addresses a job through its owner/app namespace; the fake has one.
        if path.startswith("/servicesNS/"):
            parts = path.split("/")
            path = "/services/" + "/".join(parts[4:])
        with self._lock:
            self.requests.append(SeenRequest(h.command, path, form, auth))

        if path == "/services/auth/login":
            self._login(h, form, json_mode)
            return
        if not self._authorized(auth):
            self._messages(h, 401, "WARN", "call not properly authenticated", json_mode)
            return
        if path == "/services/server/info":
            self._server_info(h, json_mode)
            return
        for prefix, is_v2 in (("/services/search/v2/jobs", True), ("/services/search/jobs", False)):
            if path == prefix or path.startswith(prefix + "/"):
                if is_v2 and not self.v2:
                    self._messages(h, 404, "ERROR", "Not Found", json_mode)
                    return
                self._jobs(h, path[len(prefix) :], form, json_mode, is_v2)
                return
        self._messages(h, 404, "ERROR", f"Not Found: {split.path}", json_mode)

    def _login(self, h: BaseHTTPRequestHandler, form: dict[str, str], json_mode: bool) -> None:
        if h.command != "POST":
            self._violation("login must be POST")
        if (form.get("username"), form.get("password")) != (
            self.username,
            self.password,
        ) or not self.username:
            self._messages(h, 401, "WARN", "Login failed", json_mode)
            return
        key = f"session-{next(self._ids)}-{base64.b16encode(self.username.encode()).decode()}"
        with self._lock:
            self.sessions.add(key)
        if json_mode:
            self._send(h, 200, json.dumps({"sessionKey": key}))
        else:
            xml = f"<response>\n  <sessionKey>{key}</sessionKey>\n</response>\n"
            self._send(h, 200, xml, "text/xml; charset=UTF-8")

    def _server_info(self, h: BaseHTTPRequestHandler, json_mode: bool) -> None:
        content = {"version": self.version, "serverName": "fake-splunk", "build": "fake"}
        if json_mode:
            doc = {
                "generator": {"build": "fake", "version": self.version},
                "entry": [{"name": "server-info", "content": content}],
            }
            self._send(h, 200, json.dumps(doc))
            return
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<feed xmlns="{ATOM_NS}" xmlns:s="{S_NS}" '
            'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
            "<title>server-info</title><id>/services/server/info</id>"
            f'<generator build="fake" version="{self.version}"/>'
            "<opensearch:totalResults>1</opensearch:totalResults>"
            "<entry><title>server-info</title><id>/services/server/info/server-info</id>"
            '<link href="/services/server/info/server-info" rel="alternate"/>'
            f'<content type="text/xml">{_atom_dict(content)}</content></entry></feed>'
        )
        self._send(h, 200, xml, "text/xml; charset=UTF-8")

    def _jobs(
        self,
        h: BaseHTTPRequestHandler,
        rest: str,
        form: dict[str, str],
        json_mode: bool,
        is_v2: bool,
    ) -> None:
        where = f"{h.command} jobs{rest}"
        if rest == "/export":
            if h.command != "POST":
                self._violation(f"{where}: export must be POST")
            if not json_mode:
                self._violation(f"{where}: the fake serves export with output_mode=json only")
            self._check_search_form(form, where)
            self._export(h, form)
            return
        if rest == "":
            if h.command != "POST":
                self._violation(f"{where}: listing jobs is not served by the fake")
                self._messages(h, 405, "ERROR", "Method not allowed", json_mode)
                return
            self._check_search_form(form, where)
            outcome = self._outcome(form.get("search", ""))
            if form.get("exec_mode") == "oneshot":
                if isinstance(outcome, SearchError):
                    self._messages(h, outcome.status, outcome.type, outcome.text, json_mode)
                    return
                if not json_mode:
                    self._violation(f"{where}: the fake serves oneshot with output_mode=json only")
                self._send(h, 200, json.dumps(self._results_doc(outcome, 0)))
                return
            if isinstance(outcome, SearchError) and outcome.status == 400:
                # SPL that does not parse is refused at dispatch.
                self._messages(h, 400, outcome.type, outcome.text, json_mode)
                return
            sid = f"{next(self._ids)}.{abs(hash(form.get('search', ''))) % 100000}"
            rows = outcome if isinstance(outcome, list) else []
            error = outcome if isinstance(outcome, SearchError) else None
            with self._lock:
                self.jobs[sid] = Job(sid, form.get("search", ""), rows, error, self.job_polls)
            if json_mode:
                self._send(h, 201, json.dumps({"sid": sid}))
            else:
                self._send(
                    h,
                    201,
                    "<?xml version='1.0' encoding='UTF-8'?>\n"
                    f"<response>\n  <sid>{sid}</sid>\n</response>\n",
                    "text/xml; charset=UTF-8",
                )
            return
        sid, _, tail = rest.lstrip("/").partition("/")
        job = self.jobs.get(sid)
        if job is None:
            self._messages(h, 404, "ERROR", f"Unknown sid {sid}", json_mode)
            return
        if tail == "":
            self._job_state(h, job, json_mode)
            return
        if tail == "results":
            expected = "POST" if is_v2 else "GET"
            if h.command != expected:
                self._violation(f"{where}: results must be {expected} on {'v2' if is_v2 else 'v1'}")
            if not json_mode:
                self._violation(f"{where}: the fake serves results with output_mode=json only")
            if job.polls_left > 0 or job.error is not None:
                self._violation(f"{where}: results read before the job was DONE")
            offset = int(form.get("offset", "0"))
            count = int(form.get("count", "100"))
            rows = job.rows[offset:] if count == 0 else job.rows[offset : offset + count]
            self._send(h, 200, json.dumps(self._results_doc(rows, offset)))
            return
        if tail == "control":
            self._send(h, 200, json.dumps({"messages": [{"type": "INFO", "text": "ok"}]}))
            return
        self._messages(h, 404, "ERROR", f"Not Found: {tail}", json_mode)

    def _job_state(self, h: BaseHTTPRequestHandler, job: Job, json_mode: bool) -> None:
        with self._lock:
            running = job.polls_left > 0
            job.polls_left = max(0, job.polls_left - 1)
        failed = not running and job.error is not None
        state = "RUNNING" if running else ("FAILED" if failed else "DONE")
        messages = (
            [{"type": job.error.type, "text": job.error.text}] if failed and job.error else []
        )
        content: dict[str, Any] = {
            "sid": job.sid,
            "dispatchState": state,
            "isDone": not running,
            "isFailed": failed,
            "resultCount": 0 if running else len(job.rows),
            "messages": messages,
        }
        if json_mode:
            doc = {"entry": [{"name": job.search, "content": content}]}
            self._send(h, 200, json.dumps(doc))
            return
        xml_content = {
            **content,
            "isDone": "1" if content["isDone"] else "0",
            "isFailed": "1" if failed else "0",
        }
        xml_content.pop("messages")
        # Real job entries carry their ACL; splunk-sdk builds result paths from it.
        xml_content["eai:acl"] = {"owner": "admin", "app": "search", "sharing": "global"}
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<entry xmlns="{ATOM_NS}" xmlns:s="{S_NS}">'
            f"<title>{escape(job.search)}</title><id>/services/search/jobs/{job.sid}</id>"
            f'<link href="/services/search/jobs/{job.sid}" rel="alternate"/>'
            f'<content type="text/xml">{_atom_dict(xml_content)}</content></entry>'
        )
        self._send(h, 200, xml, "text/xml; charset=UTF-8")

    @staticmethod
    def _results_doc(rows: list[dict[str, Any]], offset: int) -> dict[str, Any]:
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        return {
            "preview": False,
            "init_offset": offset,
            "messages": [],
            "fields": [{"name": n} for n in names],
            "results": rows,
            "highlighted": {},
        }

    def _export(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        outcome = self._outcome(form.get("search", ""))
        if isinstance(outcome, SearchError):
            self._messages(h, outcome.status, outcome.type, outcome.text, True)
            return
        lines = []
        transforming = "|" in form.get("search", "")[1:]
        if transforming and outcome:
            # Transforming searches stream a preview of the table before the final rows.
            lines.append(json.dumps({"preview": True, "offset": 0, "result": outcome[0]}))
        for i, row in enumerate(outcome):
            doc: dict[str, Any] = {"preview": False, "offset": i, "result": row}
            if i == len(outcome) - 1:
                doc["lastrow"] = True
            lines.append(json.dumps(doc))
        self._send(h, 200, "\n".join(lines) + ("\n" if lines else ""))
