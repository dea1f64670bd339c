#!/usr/bin/env node
// Sign an order for exchange-node with your own account key, as an external client does.
//
// Builds the exact text the account signs (docs/signed-orders.md), signs it with Ed25519 using
// Node.js's built-in crypto (Node 18+, no npm packages), and prints the body to POST to /orders on
// any node: {"signed": {...}}. The signed text and the order id go to stderr.
//
//   node examples/sign_order.js --key ~/.local/share/exchange-node/accounts/default.pem \
//       --api http://127.0.0.1:7947 buy BTC-USD 0.5 --price 100.25      # chain id from GET /status
//   node examples/sign_order.js --seed 000102...1f --chain-id ab...ab sell BTC-USD 1 --type market
// Add --post --token TOKEN (the node's API_TOKEN or cookie) to send it instead of printing it.
'use strict'

const crypto = require('node:crypto')
const fs = require('node:fs')
const { parseArgs } = require('node:util')

const DOMAIN = 'exchange-node/tx/v1'
// PKCS#8 DER header of an Ed25519 private key (RFC 8410); the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

function signedText (chainId, accountHex, nonce, expires, op) {
  // The documented lines, joined by "\n" with no trailing newline; absent price/stp are "-".
  return [
    DOMAIN, `chain=${chainId}`, `account=${accountHex}`, `nonce=${nonce}`, `expires=${expires}`,
    `new ${op.market} ${op.side} ${op.type} ${op.price ?? '-'} ${op.qty} ${op.stp ?? '-'}`
  ].join('\n')
}

function loadKey (opts) {
  if (opts.key) return crypto.createPrivateKey(fs.readFileSync(opts.key))
  const seed = Buffer.from(opts.seed, 'hex')
  if (seed.length !== 32) throw new Error('--seed must be 64 hex characters')
  return crypto.createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' })
}

async function apiCall (url, token, body) {
  const headers = { 'Content-Type': 'application/json' }
  if (token) headers.Authorization = `Bearer ${token}`
  const response = await fetch(url, body === undefined
    ? { headers }
    : { method: 'POST', headers, body: JSON.stringify(body) })
  return response.json()
}

async function main () {
  const { values: opts, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      key: { type: 'string' },
      seed: { type: 'string' },
      'chain-id': { type: 'string' },
      api: { type: 'string' },
      token: { type: 'string' },
      post: { type: 'boolean', default: false },
      nonce: { type: 'string' },
      expires: { type: 'string' },
      price: { type: 'string' },
      type: { type: 'string', default: 'limit' },
      stp: { type: 'string' }
    }
  })
  const [side, market, qty] = positionals
  if (!side || !market || !qty || (!opts.key === !opts.seed)) {
    console.error('usage: sign_order.js (--key PEM | --seed HEX) (--chain-id HEX | --api URL) SIDE MARKET QTY ' +
                  '[--price P] [--type limit|market|ioc|fok|post_only] [--stp MODE] [--nonce N] [--expires MS] ' +
                  '[--post --token T]')
    process.exit(2)
  }
  const api = (opts.api ?? '').replace(/\/+$/, '')
  if ((opts.post || !opts['chain-id']) && !api) {
    console.error('--api is needed to --post or to read the chain id')
    process.exit(2)
  }

  const key = loadKey(opts)
  const account = Buffer.from(crypto.createPublicKey(key).export({ format: 'jwk' }).x, 'base64url').toString('hex')
  const chainId = opts['chain-id'] ?? (await apiCall(`${api}/status`, opts.token)).chain_id
  const nowMs = Date.now()
  const nonce = opts.nonce ?? `${nowMs}-${crypto.randomBytes(4).toString('hex')}`
  const expires = opts.expires !== undefined ? Number(opts.expires) : nowMs + 60000
  const op = { op: 'new', market, side, type: opts.type, price: opts.price ?? null, qty, stp: opts.stp ?? null }
  const text = signedText(chainId, account, nonce, expires, op)
  const sig = crypto.sign(null, Buffer.from(text, 'utf8'), key).toString('hex')
  const txId = crypto.createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 32)
  const body = { signed: { chain_id: chainId, account, nonce, expires, ops: [op], sig } }

  console.error(`--- signed text ---\n${text}\n--- order id ${txId.slice(0, 30)}00`)
  if (opts.post) {
    console.log(JSON.stringify(await apiCall(`${api}/orders`, opts.token, body), null, 2))
  } else {
    console.log(JSON.stringify(body))
  }
}

main().catch((err) => { console.error(`sign_order.js: ${err.message}`); process.exit(1) })
