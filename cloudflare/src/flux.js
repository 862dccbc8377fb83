/**
 * The Flux contract: `GET /flux?prompt=...[&steps=&seed=]` answers JPEG bytes
 * from @cf/black-forest-labs/flux-1-schnell, which returns `{ image: <base64> }`.
 * `width`, `height` and `negative_prompt` are accepted and ignored: the model
 * takes none of them.
 */

import {
  BadRequest,
  MAX_SEED,
  checkInteger,
  checkPrompt,
  imageResponse,
  requireToken,
  workersAiFailure,
} from "./common.js";

export const FLUX_MODEL = "@cf/black-forest-labs/flux-1-schnell";
export const FLUX_MAX_STEPS = 8;

function decodeBase64(text) {
  const binary = atob(text.replace(/^data:[^,]*,/, "").replace(/\s+/g, ""));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

function sniffType(bytes) {
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    return "image/png";
  }
  return "image/jpeg";
}

export async function handleFlux(request, env) {
  if (request.method !== "GET") {
    throw new BadRequest("Not allowed: use GET /flux?prompt=...", 405, { allow: "GET" });
  }
  await requireToken(request, env, { allowQuery: true });
  const query = new URL(request.url).searchParams;
  const inputs = { prompt: checkPrompt(query.get("prompt")) };
  const steps = checkInteger(query.get("steps"), "steps", 1, FLUX_MAX_STEPS);
  const seed = checkInteger(query.get("seed"), "seed", 0, MAX_SEED);
  if (steps !== undefined) inputs.steps = steps;
  if (seed !== undefined) inputs.seed = seed;

  let result;
  try {
    result = await env.AI.run(FLUX_MODEL, inputs);
  } catch (error) {
    return workersAiFailure(error, env, FLUX_MODEL);
  }
  if (!result || typeof result.image !== "string" || result.image.length === 0) {
    return workersAiFailure(new Error("the model answered without an image"), env, FLUX_MODEL);
  }
  let bytes;
  try {
    bytes = decodeBase64(result.image);
  } catch {
    return workersAiFailure(new Error("the model's image is not valid base64"), env, FLUX_MODEL);
  }
  return imageResponse(bytes, sniffType(bytes));
}
