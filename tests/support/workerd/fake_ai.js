/**
 * A stand-in for the Workers AI binding (`env.AI`) in workerd, for the tests.
 *
 * Loaded as a wrapped binding: workerd calls the default export with the inner
 * bindings (JPEG and PNG bytes made by the test, and SECRET, the worker's token)
 * and the worker sees the returned object as `env.AI`. It answers as the real
 * binding does: flux-1-schnell `{ image: <base64 JPEG> }`, SDXL a stream of PNG
 * bytes, and errors thrown like the real `InferenceUpstreamError` (message
 * "<code>: <description>"). Markers in the prompt choose a failure:
 *
 *   [[filter]]          3030, the content safety filter
 *   [[capacity]]        3040, out of capacity, every time
 *   [[capacity-once]]   3040 on the first call with this prompt, then an image
 *   [[quota]]           3036, the daily free allocation is used up
 *   [[crash]]           an error without a code whose message carries SECRET
 *   [[inputs]]          an error whose message is the inputs the model got
 */

const FLUX = "@cf/black-forest-labs/flux-1-schnell";
const SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0";

class InferenceUpstreamError extends Error {
  constructor(message, name = "InferenceUpstreamError") {
    super(message);
    this.name = name;
  }
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 1) {
    binary += String.fromCharCode(bytes[i]);
  }
  return btoa(binary);
}

class FakeAi {
  constructor(env) {
    this.env = env;
    this.seen = new Map();
  }

  async run(model, inputs) {
    const prompt = String(inputs?.prompt ?? "");
    const calls = (this.seen.get(prompt) ?? 0) + 1;
    this.seen.set(prompt, calls);
    if (model !== FLUX && model !== SDXL) {
      throw new InferenceUpstreamError(`5007: No such model ${model} or task`);
    }
    if (prompt.includes("[[filter]]")) {
      throw new InferenceUpstreamError("3030: Input prompt contains NSFW content.");
    }
    if (prompt.includes("[[capacity]]") || (prompt.includes("[[capacity-once]]") && calls === 1)) {
      throw new InferenceUpstreamError("3040: Capacity temporarily exceeded, please try again.");
    }
    if (prompt.includes("[[quota]]")) {
      throw new InferenceUpstreamError(
        "3036: Account limited: you have used up your daily free allocation of 10,000 " +
          "neurons, please upgrade to Cloudflare's Workers Paid plan if you would like to " +
          "continue usage.",
      );
    }
    if (prompt.includes("[[crash]]")) {
      throw new InferenceUpstreamError(
        `upstream connection reset (request had authorization: Bearer ${this.env.SECRET})`,
      );
    }
    if (prompt.includes("[[inputs]]")) {
      throw new InferenceUpstreamError(`inputs ${JSON.stringify(inputs)}`);
    }
    if (model === FLUX) {
      return { image: toBase64(this.env.JPEG) };
    }
    return new Response(this.env.PNG).body;
  }
}

export default function makeBinding(env) {
  return new FakeAi(env);
}
