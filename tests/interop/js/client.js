#!/usr/bin/env node
'use strict'
// A grenache-nodejs-http PeerRPCClient calling --service (found through --grape) once per payload,
// in order. --payloads is a JSON array. Prints one JSON array: {"ok": true, "data": ...} or
// {"ok": false, "error": "<message>"} per payload. --compress sends gzip (grc-compress: gzip).
const { PeerRPCClient } = require('grenache-nodejs-http')
const { flags, startLink, print } = require('./common')

const opts = flags({
  grape: { type: 'string', required: true },
  service: { type: 'string', required: true },
  payloads: { type: 'string', required: true },
  compress: { type: 'boolean', default: false },
  timeout: { type: 'string', default: '5000' }
})

const link = startLink(opts.grape)
const peer = new PeerRPCClient(link, {})
peer.init()

const call = (payload) => new Promise((resolve) => {
  peer.request(opts.service, payload, { timeout: Number(opts.timeout), compress: opts.compress }, (err, data) => {
    resolve(err ? { ok: false, error: err.message } : { ok: true, data: data === undefined ? null : data })
  })
})

;(async () => {
  const results = []
  for (const payload of JSON.parse(opts.payloads)) results.push(await call(payload))
  print(results)
  peer.stop()
  link.stop()
  process.exit(0)
})()
