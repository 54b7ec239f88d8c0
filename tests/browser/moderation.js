// A moderator's session in headless Chromium on a phone-sized viewport: the browser answers
// the view's Basic challenge with the token, finds the flagged review on GET /moderation with
// its reasons, checks accessibility and that the page does not scroll sideways, clicks
// "Valid", then reloads the review's history until its newest verdict is the moderator's.
// Usage: node moderation.js BASE TOKEN REVIEW_ID SCREENSHOT HISTORY_SCREENSHOT. Prints
// "flagged <reasons>", "saved <decision>", then "history <verdict> <first reason>".
"use strict";

const { launch, checkAccessibility, scrollsSideways, run } = require("./lib");

const [base, token, id, flaggedShot, historyShot] = process.argv.slice(2);
const phone = { width: 375, height: 800 };

async function checkPage(page, what) {
  await checkAccessibility(page);
  if (await scrollsSideways(page)) throw new Error(`${what} scrolls sideways at 375 px`);
}

run(async () => {
  const browser = await launch();
  try {
    const list = await openAuthenticated(browser, `${base}/moderation?reason=link`);
    const item = `#review-${id}`;
    await list.waitForSelector(item, { timeout: 10000 });
    const reasons = await list.$eval(`${item} .reasons`, (e) => e.textContent);
    await checkPage(list, "the moderation view");
    await list.screenshot({ path: flaggedShot, fullPage: true });
    console.log(`flagged ${reasons}`);

    await list.click(`${item} button[data-decision="valid"]`);
    await list.waitForFunction(
      (s) => document.querySelector(s).textContent.startsWith("Saved"),
      { timeout: 10000, polling: 100 },
      `#status-${id}`,
    );
    console.log("saved valid");

    const history = await openAuthenticated(browser, `${base}/reviews/${id}/history`);
    const deadline = Date.now() + 50000;
    for (;;) {
      const newest = await history.evaluate(() => {
        const v = document.querySelector("#versions li");
        return v && [v.querySelector(".verdict").textContent,
          v.querySelector(".reasons").textContent.split(", ")[0]];
      });
      if (newest && newest[0] === "valid" && newest[1] === "moderator") {
        await checkPage(history, "the history page");
        await history.screenshot({ path: historyShot, fullPage: true });
        console.log(`history ${newest.join(" ")}`);
        break;
      }
      if (Date.now() > deadline) throw new Error(`the newest verdict is still ${newest}`);
      await new Promise((r) => setTimeout(r, 250));
      await history.reload({ waitUntil: "load" });
    }
  } finally {
    await browser.close();
  }
});

// A phone-sized page whose Basic challenges the browser answers with the token.
async function openAuthenticated(browser, url) {
  const page = await browser.newPage();
  await page.setViewport(phone);
  await page.authenticate({ username: "moderator", password: token });
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  const response = await page.goto(url, { waitUntil: "load" });
  if (!response.ok()) throw new Error(`${url} answered ${response.status()}`);
  return page;
}
