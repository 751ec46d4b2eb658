"""The published WaitState Python SDK (waitstate 0.1, PyPI) in agent mode, against a
running waitstate-agent. Run by tests/python_sdk.rs in two phases:

    python sdk_agent.py <agent_url> feed   # gate, report latency/error/metric
    python sdk_agent.py <agent_url> shed   # after the rules' tick: free and pro shed, enterprise passes

Exits non-zero, saying why, when the SDK does not behave as expected.
"""

import sys

import waitstate


def client(url):
    config = waitstate.WaitstateConfig(
        publish_key="",
        secret_key="",
        base_url=None,
        site_id=None,
        pulse_interval_secs=None,
        sync_interval_secs=None,
        safe_mode_strategy=None,
        safe_mode_max_rps=None,
        agent_url=url,
    )
    return waitstate.WaitstateClient(config)


def expect(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok   {what}: {got!r}")


def feed(c):
    r = c.gate("free", 2.0)
    expect("gate free", (r.allowed, r.reason), (True, waitstate.GateReason.ALLOWED))
    r = c.gate("enterprise", None)
    expect("gate enterprise", (r.allowed, r.reason), (True, waitstate.GateReason.ALLOWED))
    r = c.gate("free", float("nan"))
    expect("gate free, NaN weight", (r.allowed, r.reason), (False, waitstate.GateReason.OVER_WEIGHT))
    for _ in range(20):
        c.report_latency(900.0, "free")
        c.report_latency(20.0, "enterprise")
    # A failed request, as the SDK's middlewares report it: its latency, then the error.
    c.report_latency(950.0, "free")
    c.report_error("free")
    c.report("queue_depth", 7.0, "pro")
    c.report("queue_depth", 9.0, None)
    print("ok   reports sent")


def shed(c):
    r = c.gate("free", 1.0)
    expect("gate free after the latency rule fired", (r.allowed, r.reason), (False, waitstate.GateReason.TAG_BLOCKED))
    r = c.gate("pro", 1.0)
    expect("gate pro after the queue_depth rule fired", (r.allowed, r.reason), (False, waitstate.GateReason.TAG_BLOCKED))
    r = c.gate("enterprise", 1.0)
    expect("gate enterprise", (r.allowed, r.reason), (True, waitstate.GateReason.ALLOWED))


def main():
    url, phase = sys.argv[1], sys.argv[2]
    c = client(url)
    expect("instance id in agent mode", c.instance_id(), "agent-mode")
    {"feed": feed, "shed": shed}[phase](c)


if __name__ == "__main__":
    main()
