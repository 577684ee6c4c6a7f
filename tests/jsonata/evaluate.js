// Evaluates JSONata expressions the way Step Functions does: reads a JSON array of
// {"expression", "bindings"} on stdin and writes one {"value"} or {"error"} per case.
// "undefined" (no value) is written as {"undefined": true}.
const jsonata = require("jsonata");

async function evaluate(item) {
  try {
    const value = await jsonata(item.expression).evaluate({}, item.bindings || {});
    return value === undefined ? { undefined: true } : { value };
  } catch (err) {
    return { error: String(err.message || err), code: err.code || null };
  }
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  const results = [];
  for (const item of JSON.parse(input)) results.push(await evaluate(item));
  process.stdout.write(JSON.stringify(results));
});
