"""CLI commands of the DHT: `exchange-node dht` (the routing table: contacts, buckets, records kept),
`dht lookup NODE_ID` (a node's newest valid record; exit 1 when none is found) and `dht providers SERVICE`."""
from __future__ import annotations


import click

from node.cli.client import JsonObject, when
from node.locate import NodeTarget


def _print_record(record: JsonObject) -> None:
    from node.cli.main import print_table

    click.echo(f"node {record['node_id']}  seq {record['seq']}  protocol {record['protocol']}  "
               f"expires {when(record['expires_ms'])}")
    click.echo("services: " + (", ".join(record["services"]) or "-"))
    print_table(["host", "port", "learnt as"], [[a["host"], a["port"], a["how"]] for a in record["addresses"]])


def register(cli: click.Group) -> None:
    from node.cli.main import api_option, emit_json, json_option, print_table, request

    @cli.group("dht", invoke_without_command=True)
    @api_option
    @json_option
    @click.pass_context
    def dht(ctx: click.Context, api: NodeTarget, as_json: bool) -> None:
        """The DHT of signed node records: the routing table, and lookups by node id or service name."""
        if ctx.invoked_subcommand is not None:
            return
        data = request(api, "GET", "/dht", expect=("dht",))["dht"]
        if as_json:
            return emit_json(data)
        click.echo(f"{data.get('mode', 'server')} mode: {data['contacts']} contacts in {len(data['buckets'])} buckets; "
                   f"{data['records']} records and "
                   f"{data['services']} services kept; {data['lookups']} lookups, {data['queries']} queries "
                   f"({data['failed_queries']} failed), {data['published']} copies of our record stored")
        print_table(["bucket", "contacts"], [[index, count] for index, count in data["buckets"]])

    @dht.command("lookup")
    @click.argument("node_id")
    @click.option("--fresh", is_flag=True, help="Ask the network even when the node keeps a copy of the record")
    @api_option
    @json_option
    def lookup(node_id: str, fresh: bool, api: NodeTarget, as_json: bool) -> None:
        """The newest valid record of NODE_ID, and a link to it (exit 1 when the DHT has none)."""
        path = f"/dht/nodes/{node_id.lower()}" + ("?fresh=1" if fresh else "")
        data = request(api, "GET", path, timeout=30.0, expect=("record",))
        emit_json(data) if as_json else _print_record(data["record"])

    @dht.command("providers")
    @click.argument("service")
    @api_option
    @json_option
    def providers(service: str, api: NodeTarget, as_json: bool) -> None:
        """Live records of the nodes that serve SERVICE (e.g. chain.submit)."""
        data = request(api, "GET", f"/dht/providers/{service}", timeout=30.0, expect=("providers",))
        if as_json:
            return emit_json(data)
        if not data["providers"]:
            click.echo(f"no provider of {service} found")
            raise SystemExit(1)
        for record in data["providers"]:
            _print_record(record)
