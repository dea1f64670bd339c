export { ApiError, Client, Rejected, decimalString } from "./client.js";
export type { Answer, ClientOptions, Json } from "./client.js";
export { NonceSource, Signer, opLine, orderId, signedText, txId } from "./signing.js";
export type { Op, SignedTx } from "./signing.js";
export { LocalBook, MarketStream, compareDecimal, crc32 } from "./stream.js";
export type { StreamEvent, SocketFactory } from "./stream.js";
