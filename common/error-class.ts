import { ShardpipeError, type ErrorContext, type ShardpipeErrorOptions } from './shardpipe-error.js';

/**
 * A module's codes: each with whether repeating the same operation may succeed, and whatever else
 * the module keeps per code (a gRPC or HTTP status).
 */
export type ErrorCodeTable = Readonly<Record<string, { readonly retryable: boolean }>>;

/** A module's context type: named fields of the kinds ErrorContext holds. */
export type ContextShape<Context> = { readonly [K in keyof Context]?: ErrorContext[string] };

/** Options of an error declared with `errorClass`: the code decides retryability, so it is not an option. */
export interface CodedErrorOptions<Context extends ContextShape<Context> = ErrorContext> extends Omit<ShardpipeErrorOptions, 'retryable' | 'context'> {
  /** Where it happened; frozen with the error. */
  context?: Context;
}

/**
 * The base class of a module's error class, made from its code table: the module writes
 * `export class IngestError extends errorClass<typeof INGEST_ERROR_CODES, IngestErrorContext>('IngestError', INGEST_ERROR_CODES) {}`
 * and gets a ShardpipeError whose `code` is one of the table's, whose `retryable` comes from the
 * table, and whose `context` is a frozen copy of the one given. `instanceof` works per module.
 */
export function errorClass<const Codes extends ErrorCodeTable, Context extends ContextShape<Context> = ErrorContext>(name: string, codes: Codes) {
  return class CodedError extends ShardpipeError {
    declare readonly code: keyof Codes & string;
    declare readonly context: Readonly<Context>;

    constructor(code: keyof Codes & string, message: string, options: CodedErrorOptions<Context> = {}) {
      const context = Object.freeze({ ...options.context }) as ErrorContext;
      super(code, message, { cause: options.cause, context, retryable: codes[code]!.retryable });
      this.name = name;
    }
  };
}
