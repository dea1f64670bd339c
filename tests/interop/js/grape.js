#!/usr/bin/env node
'use strict'
// The stock `grape` CLI, with every socket kept on loopback.
//
// Grape binds its DHT UDP socket on all interfaces (bittorrent-dht `listen(port)` with no
// address). Tests and benchmarks must keep traffic on 127.0.0.1, so this wrapper binds the DHT
// socket to 127.0.0.1 (or GRAPE_BIND_HOST) before handing over to the unchanged CLI. Pass the
// usual flags, including `--b 127.0.0.1` for the HTTP API, `--dpa` and `--check_maxPayloadSize`.
const DHT = require('bittorrent-dht')

const bindHost = process.env.GRAPE_BIND_HOST || '127.0.0.1'
const listen = DHT.prototype.listen

DHT.prototype.listen = function (...args) {
  // listen([port], [address], [onlistening]): insert the address when only port/callback are given
  if (typeof args[1] !== 'string') args.splice(1, 0, bindHost)
  return listen.apply(this, args)
}

require('grenache-grape/bin/grape')
