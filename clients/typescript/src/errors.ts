// Two kinds of failure, so callers can tell "the gateway said no" from
// "the gateway could not be reached". Neither message ever holds a token:
// they are built from the status, the gateway's error body (which never
// echoes a token) and the method and path of the call.

/** The gateway answered with an error: `{"error": {"code", "message"}}`. */
export class PortcullisError extends Error {
  /** HTTP status (400, 401, 403, 404, 409, 422, 503, …). */
  readonly status: number;
  /** The contract's snake_case code (`token_not_found`, `unauthorized`, …);
   * `unexpected_response` when the body was not the contract's error body
   * (e.g. a proxy in between answered). */
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "PortcullisError";
    this.status = status;
    this.code = code;
  }
}

/** No answer: connection refused or reset, DNS failure, timeout. `cause` is
 * the underlying error. */
export class PortcullisNetworkError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PortcullisNetworkError";
  }
}
