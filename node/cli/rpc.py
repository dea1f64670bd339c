"""CLI commands of the RPC side: `exchange-node rpc SERVICE [JSON]` and `exchange-node routing`."""
from __future__ import annotations

import sys
from urllib.parse import quote

import click
import orjson

from node.cli.client import ApiFailure, Json, NodeUnreachable, call
from node.locate import NodeTarget


def register(cli: click.Group) -> None:
    from node.cli.main import (SECONDS, api_option, emit_json, fail, failure_message, json_option, print_table, request,
                          unreachable_message)

    @cli.command("rpc")
    @click.argument("service")
    @click.argument("payload", required=False, default=None)
    @click.option("--peer", default=None, help="Call this node (id or unique prefix) instead of letting the router pick.")
    @click.option("--timeout", type=SECONDS, default=None, help="Seconds, retries included (default RPC_TIMEOUT).")
    @click.option("--grenache", is_flag=True, help="Call a Grenache worker announced on Grape instead of a peer.")
    @api_option
    @json_option
    def rpc_command(service: str, payload: str | None, peer: str | None, timeout: float | None, grenache: bool,
                    api: NodeTarget, as_json: bool) -> None:
        """Call SERVICE on a peer with a JSON PAYLOAD, e.g. `exchange-node rpc ping` or
        `exchange-node rpc test.echo '{"n": 1}'`. Exits 1 with the error code when the call fails."""
        body: dict[str, object] = {}
        if payload is not None:
            try:
                body["payload"] = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from None
        if peer:
            body["peer"] = peer
        if timeout is not None:
            body["timeout"] = timeout
        if grenache:
            body["grenache"] = True
        try:
            _, data = call(api.url, "POST", f"/rpc/{quote(service, safe='')}", body, timeout=(timeout or 30.0) + 5.0,
                           token=api.token)
        except NodeUnreachable as exc:
            fail(unreachable_message(api, exc))
        except ApiFailure as exc:
            if as_json:
                emit_json({"error": exc.error})
            elif exc.status == 401:
                fail(failure_message(api, exc))
            else:
                where = f" (peer {exc.error['peer']})" if exc.error.get("peer") else ""
                click.echo(f"exchange-node: rpc {service} failed: {exc.error.get('code')}: "
                           f"{exc.error.get('message', '')}{where}", err=True)
            sys.exit(1)
        if as_json:
            return emit_json(data)
        click.echo(orjson.dumps(data["result"], option=orjson.OPT_INDENT_2).decode())
        click.echo(f"-- peer {data['peer']}, {data['attempts']} attempt(s), {data['latency_ms']:.2f} ms", err=True)

    @cli.command("routing")
    @api_option
    @json_option
    def routing_command(api: NodeTarget, as_json: bool) -> None:
        """Show how RPCs are routed: per service and peer the score, latency, error rate, breaker, hints."""
        data = request(api, "GET", "/routing", expect=("services",))
        if as_json:
            return emit_json(data)
        click.echo(f"local services  {', '.join(data.get('local_services', [])) or '-'}")
        budget = data.get("retry_budget", {})
        counters = data.get("counters", {})
        click.echo(f"requests        {counters.get('requests', 0)} ({counters.get('succeeded', 0)} ok, "
                   f"{counters.get('failed', 0)} failed, {counters.get('retries', 0)} retries; "
                   f"retry budget {budget.get('balance', 0):.1f})")
        paths = data.get("message_paths") or {}
        if paths:
            sent, got = paths.get("unicast_sent", {}), paths.get("broadcast_received", {})
            click.echo(f"message paths   unicasts sent {sent.get('direct', 0)} direct, {sent.get('relay', 0)} relayed, "
                       f"{sent.get('grenache', 0)} grenache; broadcasts in {got.get('link', 0)} link, "
                       f"{got.get('grenache', 0)} grenache")
        protection = data.get("protection") or {}
        if protection:
            limits = protection.get("mechanisms", {}).values()
            share = "" if protection.get("canary", 1.0) >= 1.0 else f" for {protection['canary']:.0%} of traffic"
            click.echo(f"protection      {protection.get('mode')}{share} ({sum(r['enforced'] for r in limits)} limits "
                       f"applied, {sum(r['shadowed'] for r in limits)} only counted)")
        hints = data.get("hints") or {}
        if hints.get("counters"):
            c = hints["counters"]
            click.echo(f"hints           {c.get('sent', 0)} sent, {c.get('accepted', 0)} accepted, "
                       f"{c.get('rejected', 0)} rejected")
        rows = []
        for service, info in sorted(data.get("services", {}).items()):
            for peer, row in sorted(info.get("peers", {}).items(), key=lambda kv: (kv[1].get("score") is None,
                                                                                    kv[1].get("score") or 0)):
                hint = row.get("hint") or {}
                rows.append([service, peer, _num(row.get("score")), _num(row.get("latency_ms")),
                             _pct(row.get("error_rate")), row.get("breaker", "-"), row.get("outstanding", 0),
                             row.get("requests_sent", 0),
                             f"{hint.get('status')} x{hint.get('multiplier')}" if hint else "-",
                             "" if row.get("connected", True) else "gone"])
        if not rows:
            click.echo("no routing data yet (no peer offers a service, or no request was made)")
            return
        click.echo("")
        print_table(["service", "peer", "score", "latency ms", "errors", "breaker", "in flight", "sent", "hint", ""],
                    rows)
        transitions = data.get("breaker_transitions") or []
        if transitions:
            click.echo("\nrecent breaker transitions")
            for t in transitions[-10:]:
                click.echo(f"  {t['service']} {t['peer']} {t['from']} -> {t['to']}: {t['reason']}")


def _num(value: Json) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: Json) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
