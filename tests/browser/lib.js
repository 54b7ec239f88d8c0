// What every browser script here shares: launching the system Chromium headless, and the
// accessibility check (axe-core, its default rules, none disabled) that every page must pass.
"use strict";

const fs = require("fs");
const puppeteer = require("puppeteer-core");

const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

async function launch() {
  return puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage"],
  });
}

// Opens a page that fails the script on any script error, and loads `url`, which must answer
// 2xx, or 304 when the browser revalidated what it holds (the pages send an ETag).
async function open(browser, url, viewport) {
  const page = await browser.newPage();
  if (viewport) await page.setViewport(viewport);
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  const response = await page.goto(url, { waitUntil: "load" });
  if (!response.ok() && response.status() !== 304) {
    throw new Error(`${url} answered ${response.status()}`);
  }
  return page;
}

// Runs axe-core on the page as it is now; throws with every violation listed (rule, impact,
// the offending nodes) if there is one.
async function checkAccessibility(page) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document);
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(" ")),
    }));
  });
  if (result.length > 0) {
    throw new Error(`axe-core found ${result.length} violation(s): ${JSON.stringify(result, null, 1)}`);
  }
}

// Whether the page scrolls sideways at its current viewport (it must not on a phone).
async function scrollsSideways(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
}

// Runs `main` and exits non-zero with its error, so the Rust test sees the failure.
function run(main) {
  main().catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
}

module.exports = { launch, open, checkAccessibility, scrollsSideways, run };
