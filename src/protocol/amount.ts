import { VmError } from './errors.js'

/** Amounts are unsigned 128-bit integers of minor units; on the wire, decimal strings without sign or exponent. */
export const amountMax = (1n << 128n) - 1n
export const amountPattern = '^(0|[1-9][0-9]{0,38})$'
const amountRegExp = new RegExp(amountPattern)
export const scaleMax = 18

export function parseAmount(text: string): bigint {
  if (!amountRegExp.test(text))
    throw new VmError(
      'invalid_amount',
      `amount must be a decimal integer of minor units, got ${JSON.stringify(text)}`,
    )
  const value = BigInt(text)
  if (value > amountMax) throw new VmError('invalid_amount', 'amount exceeds 128 bits')
  return value
}

/** Converts a human decimal ("1.25") to minor units at the asset's scale, refusing excess precision. */
export function parseDecimal(text: string, scale: number): bigint {
  const match = /^(0|[1-9][0-9]*)(?:\.([0-9]+))?$/.exec(text)
  if (match === null)
    throw new VmError(
      'invalid_amount',
      `amount must be a plain positive decimal, got ${JSON.stringify(text)}`,
    )
  const fraction = match[2] ?? ''
  if (fraction.length > scale)
    throw new VmError('invalid_amount', `amount has more than ${scale} decimal places`)
  const value = BigInt(match[1]! + fraction.padEnd(scale, '0'))
  if (value > amountMax) throw new VmError('invalid_amount', 'amount exceeds 128 bits')
  return value
}

export function formatDecimal(value: bigint, scale: number): string {
  const negative = value < 0n
  const digits = (negative ? -value : value).toString().padStart(scale + 1, '0')
  const whole = digits.slice(0, digits.length - scale)
  const fraction = digits.slice(digits.length - scale)
  return (negative ? '-' : '') + whole + (scale > 0 ? `.${fraction}` : '')
}
