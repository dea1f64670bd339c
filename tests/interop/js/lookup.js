#!/usr/bin/env node
'use strict'
// grenache-nodejs-link lookup(--service) on --grape. Prints {"ok": true, "addresses": [...]} or
// {"ok": false, "error": "<message>"} (Link reports "no addresses" as ERR_GRAPE_LOOKUP_EMPTY).
const { flags, startLink, print } = require('./common')

const opts = flags({
  grape: { type: 'string', required: true },
  service: { type: 'string', required: true }
})

const link = startLink(opts.grape)
link.lookup(opts.service, {}, (err, addresses) => {
  print(err ? { ok: false, error: err.message } : { ok: true, addresses })
  link.stop()
  process.exit(0)
})
