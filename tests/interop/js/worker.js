#!/usr/bin/env node
'use strict'
// A grenache-nodejs-http PeerRPCServer announcing --service on --grape, listening on 127.0.0.1.
// Answer: {"echo": payload, "len": <length of JSON(payload)>, "worker": --id}; the payload "boom"
// (or {"fail": "<code>"}) gets an error reply ("ERR_BOOM" or the given code).
// Prints {"ready": true, "port": N, "service": S, "pid": P} once the first announce succeeded.
const { PeerRPCServer } = require('grenache-nodejs-http')
const { flags, startLink, print, bindLoopback } = require('./common')

const opts = flags({
  grape: { type: 'string', required: true },
  service: { type: 'string', required: true },
  port: { type: 'string', default: '0' },
  id: { type: 'string', default: 'node-worker' },
  interval: { type: 'string', default: '1000' }
})

const link = startLink(opts.grape)
const peer = new PeerRPCServer(link, { timeout: 300000 })
peer.init()
const service = bindLoopback(peer.transport('server'))

service.on('request', (rid, key, payload, handler) => {
  if (payload === 'boom') return handler.reply(new Error('ERR_BOOM'))
  if (payload && typeof payload === 'object' && typeof payload.fail === 'string') {
    return handler.reply(new Error(payload.fail))
  }
  const len = JSON.stringify(payload === undefined ? null : payload).length
  handler.reply(null, { echo: payload, len, worker: opts.id })
})

service.listen(Number(opts.port))
service.socket.on('listening', () => {
  const port = service.socket.address().port
  service.port = port
  let ready = false
  link.startAnnouncing(opts.service, port, { interval: Number(opts.interval) }, (err) => {
    if (err) process.stderr.write(`announce failed: ${err.message}\n`)
  })
  const check = () => link.announce(opts.service, port, {}, (err) => {
    if (err || ready) return setTimeout(check, 200)
    ready = true
    print({ ready: true, port, service: opts.service, pid: process.pid })
  })
  check()
})

const stop = () => { link.stop(); peer.stop(); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
