/**
 * The SDXL contract: `POST /sdxl` with a JSON body (`prompt`, and optionally
 * `negative_prompt`, `width`, `height`, `num_steps`, `guidance`, `seed`)
 * answers PNG bytes from @cf/stabilityai/stable-diffusion-xl-base-1.0.
 */

import {
  BadRequest,
  MAX_BODY_BYTES,
  MAX_SEED,
  checkInteger,
  checkNumber,
  checkPrompt,
  imageResponse,
  requireToken,
  workersAiFailure,
} from "./common.js";

export const SDXL_MODEL = "@cf/stabilityai/stable-diffusion-xl-base-1.0";
export const SDXL_MAX_STEPS = 20;
export const SDXL_MIN_SIDE = 256;
export const SDXL_MAX_SIDE = 2048;

async function readJsonObject(request) {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_BODY_BYTES) {
    throw new BadRequest(`The body is larger than ${MAX_BODY_BYTES} bytes`, 413);
  }
  const text = await request.text();
  if (text.length > MAX_BODY_BYTES) {
    throw new BadRequest(`The body is larger than ${MAX_BODY_BYTES} bytes`, 413);
  }
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BadRequest('The body must be JSON, e.g. {"prompt": "a red fox"}');
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new BadRequest('The body must be a JSON object, e.g. {"prompt": "a red fox"}');
  }
  return body;
}

export async function handleSdxl(request, env) {
  if (request.method !== "POST") {
    throw new BadRequest("Not allowed: use POST /sdxl with a JSON body", 405, { allow: "POST" });
  }
  await requireToken(request, env, { allowQuery: false });
  const body = await readJsonObject(request);
  const inputs = { prompt: checkPrompt(body.prompt) };
  const optional = {
    negative_prompt: checkPrompt(body.negative_prompt, "negative_prompt"),
    width: checkInteger(body.width, "width", SDXL_MIN_SIDE, SDXL_MAX_SIDE),
    height: checkInteger(body.height, "height", SDXL_MIN_SIDE, SDXL_MAX_SIDE),
    num_steps: checkInteger(body.num_steps, "num_steps", 1, SDXL_MAX_STEPS),
    guidance: checkNumber(body.guidance, "guidance", 0, 30),
    seed: checkInteger(body.seed, "seed", 0, MAX_SEED),
  };
  for (const [name, value] of Object.entries(optional)) {
    if (value !== undefined) inputs[name] = value;
  }

  let result;
  try {
    result = await env.AI.run(SDXL_MODEL, inputs);
  } catch (error) {
    return workersAiFailure(error, env, SDXL_MODEL);
  }
  // The model answers a stream of PNG bytes; the bytes go through untouched.
  if (result instanceof ReadableStream || result instanceof ArrayBuffer || ArrayBuffer.isView(result)) {
    return imageResponse(result, "image/png");
  }
  return workersAiFailure(new Error("the model answered without an image"), env, SDXL_MODEL);
}
