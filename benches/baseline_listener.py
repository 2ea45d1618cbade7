"""Baseline for the load driver (benches/load.rs): the minimal supervisord event
listener most Python tools are (superslacker and the like). It is built on
supervisor.childutils and, for every PROCESS_STATE event, posts synchronously to
Slack's chat.postMessage BEFORE answering supervisord.

Run with the python of the venv made by scripts/test-env (supervisor 4.3.0).
Settings from the environment: SLACK_API_URL (e.g. http://127.0.0.1:PORT/api),
SLACK_TOKEN, SLACK_CHANNEL. Logs (failed posts) go to stderr: stdout is the
protocol channel.
"""

import json
import os
import sys
import urllib.error
import urllib.request

from supervisor import childutils


def main():
    api = os.environ["SLACK_API_URL"].rstrip("/")
    token = os.environ["SLACK_TOKEN"]
    channel = os.environ["SLACK_CHANNEL"]
    url = api + "/chat.postMessage"
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        name = headers.get("eventname", "")
        if name.startswith("PROCESS_STATE"):
            fields = childutils.get_headers(payload)
            text = "%s:%s is %s (was %s)" % (
                fields.get("groupname"),
                fields.get("processname"),
                name[len("PROCESS_STATE_"):],
                fields.get("from_state"),
            )
            body = json.dumps({"channel": channel, "text": text}).encode()
            req = urllib.request.Request(
                url,
                data=body,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Authorization": "Bearer " + token,
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()
            except (urllib.error.URLError, OSError) as e:
                # Like most such tools: log and answer OK anyway (the event is lost).
                sys.stderr.write("post failed: %s\n" % e)
                sys.stderr.flush()
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
