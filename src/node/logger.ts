import pino, { type Logger } from 'pino'

/** Structured JSON logs; signatures, private keys and the master key never reach them. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    redact: {
      paths: ['req.headers.signature', 'req.headers["signature-input"]', '*.secretKey', '*.d', 'masterKey'],
      censor: '[redacted]',
    },
  })
}
