"""Both client libraries refuse a float (a JS number) where a decimal string belongs, before anything is signed or
sent, saying to send a string; the Python one writes an int or a Decimal out exactly."""
from __future__ import annotations

import asyncio
import decimal
import subprocess

import pytest

from exchange_node_client import AsyncClient, Signer
from exchange_node_client.client import decimal_text
from tests.harness import closed_port
from tests.typescript_client import NODE, PACKAGE, needs_build


def test_python_client_refuses_a_float_saying_to_send_a_string():
    async def place(**numbers: object) -> None:
        async with AsyncClient(f"http://127.0.0.1:{closed_port()}", signer=Signer.generate()) as client:
            await client.place("BTC-USD", "buy", **numbers)  # type: ignore[arg-type]

    with pytest.raises(TypeError) as refused:
        asyncio.run(place(qty="0.5", price=100.25))           # refused before it connects (nothing listens)
    assert str(refused.value) == ('price must be a decimal string like "100.25", not a float (100.25): a float '
                                  'cannot hold most decimals exactly; send a str or a decimal.Decimal')
    with pytest.raises(TypeError, match=r'^qty must be a decimal string like "0.5", not a float'):
        asyncio.run(place(qty=0.1, price="100"))
    assert decimal_text(decimal.Decimal("100.250"), "price") == "100.250" and decimal_text(3, "qty") == "3"
    with pytest.raises(TypeError, match="not bool"):
        decimal_text(True, "qty")


@needs_build
@pytest.mark.process          # runs Node.js
def test_typescript_client_refuses_a_number_saying_to_send_a_string():
    script = """
import { Client, Signer } from "./dist/index.js";
const client = new Client("http://127.0.0.1:1", { signer: await Signer.generate() });
for (const args of [["0.5", 100.25], [0.5, "100.25"]]) {
  try { await client.place("BTC-USD", "buy", ...args); console.log("sent"); }
  catch (error) { console.log(error.constructor.name + ": " + error.message); }
}
"""
    done = subprocess.run([NODE or "node", "--input-type=module", "-e", script], cwd=PACKAGE, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        'TypeError: price must be a decimal string like "100.25", not a number (100.25): send String(value) or the '
        'text the user typed',
        'TypeError: qty must be a decimal string like "0.5", not a number (0.5): send String(value) or the text the '
        'user typed']
