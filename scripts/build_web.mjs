// Copies the browser builds of clipfeed's npm dependencies into clipfeed/web/static/vendor/.
// Run after `npm ci`:  node scripts/build_web.mjs
// The vendor folder is generated (gitignored); the web pages load /static/vendor/*.js from it.
import { copyFileSync, mkdirSync, existsSync, writeFileSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const modules = join(root, "node_modules");
const vendor = join(root, "clipfeed", "web", "static", "vendor");

// [package, file inside the package, name in vendor/]
const FILES = [
  ["hls.js", "dist/hls.min.js", "hls.min.js"],
  ["hls.js", "LICENSE", "hls.js.LICENSE.txt"],
  ["tus-js-client", "dist/tus.min.js", "tus.min.js"],
  ["tus-js-client", "LICENSE", "tus-js-client.LICENSE.txt"],
];

mkdirSync(vendor, { recursive: true });
const versions = {};
for (const [pkg, file, name] of FILES) {
  const from = join(modules, pkg, file);
  if (!existsSync(from)) {
    console.error(`missing ${from}: run \`npm ci\` first`);
    process.exit(1);
  }
  copyFileSync(from, join(vendor, name));
  versions[pkg] = JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
}
writeFileSync(join(vendor, "versions.json"), JSON.stringify(versions, null, 2) + "\n");
console.log(`vendor: ${Object.entries(versions).map(([p, v]) => `${p}@${v}`).join(", ")} -> ${vendor}`);
