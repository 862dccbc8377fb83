/**
 * SakaiBot's image worker: one Worker that speaks both contracts of the bot.
 *
 *   GET  /flux?prompt=...   -> JPEG (flux-1-schnell)   FLUX_WORKER_URL=https://.../flux
 *   POST /sdxl  JSON body   -> PNG  (SDXL base 1.0)     SDXL_WORKER_URL=https://.../sdxl
 *
 * Both need the API_TOKEN secret (`npx wrangler secret put API_TOKEN`) as
 * `Authorization: Bearer <token>`; /flux also takes `?token=<token>`.
 * Errors are JSON `{"error": "..."}`; see docs/image-generation/cloudflare.md.
 */

import { BadRequest, jsonResponse, redact } from "./common.js";
import { handleFlux } from "./flux.js";
import { handleSdxl } from "./sdxl.js";

const ROUTES = { "/flux": handleFlux, "/sdxl": handleSdxl };

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname.replace(/\/+$/, "");
    const handle = ROUTES[path];
    if (handle === undefined) {
      return jsonResponse(404, {
        error: "Not found: use GET /flux?prompt=... or POST /sdxl with a JSON body",
      });
    }
    try {
      return await handle(request, env);
    } catch (error) {
      if (error instanceof BadRequest) {
        return jsonResponse(error.status, { error: error.message }, error.headers);
      }
      console.error(`unexpected error: ${redact(error?.stack ?? error, env)}`);
      return jsonResponse(500, { error: "Internal error in the worker" });
    }
  },
};
