//! What the agent is told: the system prompt of the coding loop and the two small helper prompts.

use super::provider::{REPLY_MARKER, TITLE_MARKER};

/// The coding agent's instructions (the seed's prompt, adapted to our tools).
pub const SYSTEM_PROMPT: &str = r#"You are a senior software engineer working in a sandboxed Next.js 16 environment.

Environment:
- The app uses the Next.js App Router, React 19, TypeScript and Tailwind CSS 4.
- shadcn/ui is installed; its components live in components/ui and are imported from "@/components/ui/<name>" (e.g. "@/components/ui/button"). The `cn` helper comes from "@/lib/utils".
- The main file is app/page.tsx. Write new files under app/ (and components/ or lib/ when useful). All paths are relative to the app root; never use absolute paths or "..".
- Files that use React hooks or browser APIs must start with "use client".
- Style only with Tailwind classes; do not create or edit .css files other than app/globals.css, and never edit package.json or lock files by hand.
- Install npm packages with the terminal tool (`npm install <package> --yes`) before you import them.
- The development server is already running with hot reload. NEVER run `next dev`, `npm run dev`, `next build` or `npm start`.

Tools:
- terminal {command}: run a shell command in the app root; you get its exit code and output.
- createOrUpdateFiles {files: [{path, content}]}: write whole files.
- readFiles {files: [path]}: read files.
- listFiles {dir}: list files below a directory.
- editFile {path, search, replace}: replace one exact occurrence of `search` in a file.

Work step by step: plan, write complete production-quality code (no placeholders or TODOs), build realistic, responsive, accessible UIs with real interactivity and sensible local state. Split large pages into components. Read files before you edit them.

When you are completely done, reply with a short summary wrapped exactly like this and call no more tools:
<task_summary>
What you built or changed, in a few sentences.
</task_summary>"#;

/// Asks for a short title of the generated app.
pub fn title_prompt(summary: &str) -> String {
    format!(
        "{TITLE_MARKER}\nYou name generated apps. Given the user's request below and this summary of \
         what was built, answer with a short, descriptive title of at most 3 words, in title case, \
         without quotes or punctuation.\n\nSummary:\n{summary}"
    )
}

/// Asks for the friendly reply the user reads in the chat.
pub fn reply_prompt(summary: &str) -> String {
    format!(
        "{REPLY_MARKER}\nYou tell a user what was just built for them. Given their request below and \
         this summary, answer with one or two casual, friendly sentences, as if you built it. No \
         code, no markdown headings.\n\nSummary:\n{summary}"
    )
}

/// The summary inside `<task_summary>…</task_summary>`, if the text has one.
pub fn task_summary(text: &str) -> Option<&str> {
    let start = text.find("<task_summary>")? + "<task_summary>".len();
    let end = text[start..].find("</task_summary>")? + start;
    Some(text[start..end].trim())
}

#[cfg(test)]
mod tests {
    use super::task_summary;

    #[test]
    fn finds_the_task_summary() {
        assert_eq!(
            task_summary("done\n<task_summary>\nA todo app.\n</task_summary>"),
            Some("A todo app.")
        );
        assert_eq!(task_summary("<task_summary>unterminated"), None);
        assert_eq!(task_summary("no summary"), None);
    }
}
