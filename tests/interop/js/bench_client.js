#!/usr/bin/env node
'use strict'
// Load client for the baseline benchmark: a PeerRPCClient keeps --concurrency requests to
// --service in flight for --seconds (bounded), then prints
// {"requests", "errors", "seconds", "rps", "p50_ms", "p99_ms", "concurrency"}.
const { PeerRPCClient } = require('grenache-nodejs-http')
const { flags, startLink, print } = require('./common')

const opts = flags({
  grape: { type: 'string', required: true },
  service: { type: 'string', required: true },
  seconds: { type: 'string', default: '2' },
  concurrency: { type: 'string', default: '1' },
  payload: { type: 'string', default: '{"op":"ping","n":1}' },
  warmup: { type: 'string', default: '0.3' },
  max: { type: 'string', default: '2000000' }
})

const seconds = Math.min(Number(opts.seconds), 120)
const concurrency = Math.max(1, Math.min(Number(opts.concurrency), 1000))
const payload = JSON.parse(opts.payload)
const link = startLink(opts.grape)
const peer = new PeerRPCClient(link, {})
peer.init()

const once = () => new Promise((resolve) => {
  const t0 = process.hrtime.bigint()
  peer.request(opts.service, payload, { timeout: 10000 }, (err) => {
    resolve([err, Number(process.hrtime.bigint() - t0) / 1e6])
  })
})

async function phase (durationMs, record) {
  const deadline = Date.now() + durationMs
  const lat = []
  let errors = 0
  let issued = 0
  const loop = async () => {
    while (Date.now() < deadline && issued < Number(opts.max)) {
      issued++
      const [err, ms] = await once()
      if (err) errors++
      else if (record) lat.push(ms)
    }
  }
  const started = process.hrtime.bigint()
  await Promise.all(Array.from({ length: concurrency }, loop))
  return { lat, errors, elapsed: Number(process.hrtime.bigint() - started) / 1e9 }
}

const pct = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null

;(async () => {
  await phase(Number(opts.warmup) * 1000, false)
  const { lat, errors, elapsed } = await phase(seconds * 1000, true)
  lat.sort((a, b) => a - b)
  print({
    requests: lat.length,
    errors,
    seconds: elapsed,
    concurrency,
    rps: lat.length / elapsed,
    p50_ms: pct(lat, 0.5),
    p99_ms: pct(lat, 0.99)
  })
  peer.stop()
  link.stop()
  process.exit(0)
})()
