/**
 * What both contracts share: the token check, the input checks, and the one
 * place where a Workers AI error becomes an answer SakaiBot understands
 * (docs/image-generation/cloudflare.md lists them).
 */

/** flux-1-schnell takes at most 2048 characters; SDXL gets the same bound. */
export const MAX_PROMPT_CHARS = 2048;
/** Seeds as the bot sends them (0 to 2^32 - 1). */
export const MAX_SEED = 4294967295;
/** Workers AI capacity (3040) usually comes back within seconds. */
export const CAPACITY_RETRY_AFTER_S = 10;
/** A JSON request body is a prompt and a few numbers; anything bigger is refused unread. */
export const MAX_BODY_BYTES = 16 * 1024;

const encoder = new TextEncoder();

/** A 4xx answer about the request itself; `status` is 400 unless said otherwise. */
export class BadRequest extends Error {
  constructor(message, status = 400, headers = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

export function jsonResponse(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
      ...headers,
    },
  });
}

export function imageResponse(body, contentType) {
  return new Response(body, {
    status: 200,
    headers: { "content-type": contentType, "cache-control": "no-store" },
  });
}

/** Replaces every occurrence of the secret token in `text`: no answer ever carries it. */
export function redact(text, env) {
  const token = typeof env.API_TOKEN === "string" ? env.API_TOKEN : "";
  const plain = String(text);
  return token ? plain.split(token).join("***") : plain;
}

/**
 * Compares two strings in constant time. Hashing first gives both sides the
 * same length, so neither the length nor a common prefix of the secret leaks.
 */
async function sameSecret(given, expected) {
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(given)),
    crypto.subtle.digest("SHA-256", encoder.encode(expected)),
  ]);
  return crypto.subtle.timingSafeEqual(a, b);
}

/**
 * Throws a 401 BadRequest unless the request carries the API_TOKEN secret:
 * `Authorization: Bearer <token>`, or `?token=<token>` when `allowQuery`
 * (for clients that cannot set headers).
 */
export async function requireToken(request, env, { allowQuery }) {
  const expected = env.API_TOKEN;
  if (typeof expected !== "string" || expected.length === 0) {
    // Fail closed: a worker deployed without its secret must not be open to anyone.
    throw new BadRequest(
      "Unauthorized: this worker has no API_TOKEN secret yet; run `npx wrangler secret put API_TOKEN`",
      401,
    );
  }
  const header = request.headers.get("authorization") ?? "";
  const bearer = /^Bearer\s+(.+)$/i.exec(header.trim());
  let given = bearer ? bearer[1].trim() : null;
  if (given === null && allowQuery) {
    given = new URL(request.url).searchParams.get("token");
  }
  if (given === null || given === "") {
    throw new BadRequest(
      allowQuery
        ? "Unauthorized: send the token as `Authorization: Bearer <token>` or `?token=<token>`"
        : "Unauthorized: send the token as `Authorization: Bearer <token>`",
      401,
      { "www-authenticate": "Bearer" },
    );
  }
  if (!(await sameSecret(given, expected))) {
    throw new BadRequest("Unauthorized: wrong token", 401, { "www-authenticate": "Bearer" });
  }
}

/** The prompt, trimmed; a 400 when it is missing, not text or too long. */
export function checkPrompt(value, name = "prompt") {
  if (value === undefined || value === null || (typeof value === "string" && !value.trim())) {
    if (name === "prompt") {
      throw new BadRequest("Prompt is required");
    }
    return undefined;
  }
  if (typeof value !== "string") {
    throw new BadRequest(`${name} must be text`);
  }
  const text = value.trim();
  if (text.length > MAX_PROMPT_CHARS) {
    throw new BadRequest(
      `${name} is ${text.length} characters long; at most ${MAX_PROMPT_CHARS} are allowed`,
    );
  }
  return text;
}

/**
 * An integer in [min, max] from a query string or a JSON number; `undefined`
 * when absent; a 400 naming the field and its range otherwise.
 */
export function checkInteger(value, name, min, max) {
  if (value === undefined || value === null || value === "") {
    return undefined;
  }
  let number = value;
  if (typeof value === "string") {
    number = /^\s*-?\d+\s*$/.test(value) ? Number(value) : Number.NaN;
  }
  if (typeof number !== "number" || !Number.isInteger(number) || number < min || number > max) {
    throw new BadRequest(`${name} must be a whole number from ${min} to ${max}`);
  }
  return number;
}

/** A finite number in [min, max], or `undefined` when absent. */
export function checkNumber(value, name, min, max) {
  if (value === undefined || value === null) {
    return undefined;
  }
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw new BadRequest(`${name} must be a number from ${min} to ${max}`);
  }
  return value;
}

/** The Workers AI error code in an error thrown by `env.AI.run` ("3040: Capacity ..."). */
export function workersAiCode(error) {
  const message = String(error?.message ?? error ?? "");
  const leading = /^\s*(\d{4})\s*:/.exec(message);
  if (leading) {
    return Number(leading[1]);
  }
  const anywhere = /\b(3\d{3}|5\d{3})\b/.exec(message);
  return anywhere ? Number(anywhere[1]) : null;
}

function secondsToNextUtcDay(nowMs) {
  const now = new Date(nowMs);
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.max(1, Math.ceil((next - nowMs) / 1000));
}

/** The answer for an error thrown by `env.AI.run`; the bot knows each of these shapes. */
export function workersAiFailure(error, env, model) {
  const code = workersAiCode(error);
  const details = redact(String(error?.message ?? error ?? "unknown error"), env).slice(0, 500);
  console.error(`Workers AI error: model=${model} code=${code ?? "none"}`);
  if (code === 3030) {
    // The bot shows "your prompt was filtered" and never retries it.
    return jsonResponse(400, {
      error: "Prompt was filtered by the Workers AI content safety filter (3030)",
      code,
    });
  }
  if (code === 3040) {
    return jsonResponse(
      503,
      { error: "Workers AI is out of capacity for this model (3040); try again shortly", code },
      { "retry-after": String(CAPACITY_RETRY_AFTER_S) },
    );
  }
  if (code === 3036) {
    return jsonResponse(
      429,
      {
        error:
          "Workers AI daily free allocation of 10,000 neurons is used up (3036); it resets at " +
          "00:00 UTC, or upgrade the account to Workers Paid",
        code,
      },
      { "retry-after": String(secondsToNextUtcDay(Date.now())) },
    );
  }
  return jsonResponse(502, { error: "Workers AI failed to generate the image", code, details });
}
