//! The rule labeler: [`grade`] (is a response's checkable answer right?) and [`rank`] (order
//! candidate responses as a careful person would).
//!
//! Both read only the prompt, its answer and the responses, never the seed: they know the
//! *kinds* of words tinyworld uses (the fixed pools of names, colours, towns, ...), which is
//! enough to find what a response claims.
//!
//! **Grading.** Words are lowercased, possessive `'s` is dropped and number words become
//! digits ("twelve" = "12"). The answer's kind is the pool its words come from (numbers,
//! yes/no, colours, towns, ...). The response's words of that kind, less restatements of the
//! prompt's own words of that kind (together, in any order: "7 plus 5", "9 minus 3" for "take
//! 3 from 9"), are its claim. It is correct when it contains the answer (a list answer such
//! as `3, 4, 5` in order) and claims nothing else: "7 plus 5 is 12" is right, "7 plus 5 is 12
//! or 13" is wrong, and "5 plus 0 is 0" is wrong although it says 5.
//!
//! **Ranking.** Candidates are ordered by correctness first (correct; then no claim: an honest
//! "I do not know" or a reply that does not answer; then wrong or empty; all non-empty replies
//! equal when the prompt has no checkable answer), then by a style
//! score: on topic (mentions what the prompt is about), a complete sentence, polite (no rude
//! words; greets back a greeting, welcomes a thank-you), short enough for the question, no
//! repeated sentences, phrases or words. Equal candidates keep their input order.

use std::collections::BTreeMap;

use serde_json::Value;

use super::world::*;

/// Whether `response` gives the checkable answer of a `prompts` record; `None` when the record
/// has no `answer` (or no `prompt`).
pub fn grade(prompt_record: &Value, response: &str) -> Option<bool> {
    let prompt = prompt_record.get("prompt")?.as_str()?;
    let answer = prompt_record.get("answer")?.as_str()?;
    Some(is_correct(prompt, answer, response))
}

/// Indices of `candidates`, best first, as a careful person would rank them (see the module
/// doc). Deterministic; ties keep input order.
pub fn rank(prompt: &str, answer: Option<&str>, candidates: &[String]) -> Vec<usize> {
    let scores = scores(prompt, answer, candidates);
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // A stable sort: equal scores keep their input order.
    order.sort_by(|&i, &j| scores[j].cmp(&scores[i]));
    order
}

/// [`rank`]'s order as groups of tied candidates, best first: candidates with equal scores
/// (correctness tier and style) are one group, in input order. Identical responses are
/// always tied.
pub fn rank_groups(prompt: &str, answer: Option<&str>, candidates: &[String]) -> Vec<Vec<usize>> {
    let scores = scores(prompt, answer, candidates);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in rank(prompt, answer, candidates) {
        match groups.last_mut() {
            Some(g) if scores[g[0]] == scores[i] => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// Each candidate's (correctness tier, style score); higher is better.
fn scores(prompt: &str, answer: Option<&str>, candidates: &[String]) -> Vec<(u8, i64)> {
    candidates
        .iter()
        .map(|c| {
            let tier = match answer {
                _ if c.trim().is_empty() => 0,
                Some(ans) => match judge(prompt, ans, c) {
                    Verdict::Correct => 2,
                    _ if is_abstention(c) => 1,
                    Verdict::NoClaim => 1,
                    Verdict::Wrong => 0,
                },
                None => 1,
            };
            (tier, style(prompt, answer.is_some(), c))
        })
        .collect()
}

/// The kind of word an answer is, by the pool its words come from.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Number,
    YesNo,
    /// Index into [`POOLS`].
    Pool(usize),
    /// Not a tinyworld word: compare the answer's words only.
    Other,
}

fn in_pool(pool: &[&str], w: &str) -> bool {
    pool.iter().any(|p| p.eq_ignore_ascii_case(w))
}

fn is_number(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit())
}

/// Pools a single answer word can come from; the first that holds it names its kind.
const POOLS: &[fn(&str) -> bool] = &[
    |w| in_pool(PEOPLE_POOL, w),
    |w| in_pool(PLACE_POOL, w),
    |w| in_pool(PET_NAME_POOL, w),
    |w| in_pool(COLOURS, w),
    |w| in_pool(FOODS, w),
    |w| in_pool(OBJECTS, w),
    |w| LANDMARKS.iter().any(|(_, n)| *n == w),
    |w| ANIMALS.iter().any(|a| a.kind == w || a.plural == w),
    |w| ANIMALS.iter().any(|a| a.sound == w),
];

impl Kind {
    fn of(answer: &[String]) -> Kind {
        let Some(first) = answer.first() else { return Kind::Other };
        let kind = if is_number(first) {
            Kind::Number
        } else if first == "yes" || first == "no" {
            Kind::YesNo
        } else {
            match POOLS.iter().position(|p| p(first)) {
                Some(i) => Kind::Pool(i),
                None => Kind::Other,
            }
        };
        if answer.iter().all(|w| kind.holds(w)) { kind } else { Kind::Other }
    }

    fn holds(self, w: &str) -> bool {
        match self {
            Kind::Number => is_number(w),
            Kind::YesNo => w == "yes" || w == "no",
            Kind::Pool(i) => POOLS[i](w),
            Kind::Other => false,
        }
    }
}

/// What a response claims, against the answer.
#[derive(Debug, PartialEq)]
enum Verdict {
    Correct,
    /// Says nothing of the answer's kind beyond restating the prompt.
    NoClaim,
    Wrong,
}

/// The grading rule of the module doc.
pub(crate) fn is_correct(prompt: &str, answer: &str, response: &str) -> bool {
    judge(prompt, answer, response) == Verdict::Correct
}

fn judge(prompt: &str, answer: &str, response: &str) -> Verdict {
    let answer = words(answer);
    if answer.is_empty() {
        return Verdict::Wrong;
    }
    let kind = Kind::of(&answer);
    let said = words(response);
    if matches!(kind, Kind::Other) {
        return if contains_run(&said, &answer) { Verdict::Correct } else { Verdict::Wrong };
    }
    let said: Vec<String> = said.into_iter().filter(|w| kind.holds(w)).collect();
    // Take away restatements of the prompt (its words of this kind, in any order, as a run):
    // what is left is the claim.
    let restated: Vec<String> = words(prompt).into_iter().filter(|w| kind.holds(w)).collect();
    let mut claim: Vec<&String> = Vec::new();
    let mut i = 0;
    while i < said.len() {
        let k = restated.len();
        if k > 0 && i + k <= said.len() && same_words(&said[i..i + k], &restated) {
            i += k;
        } else {
            claim.push(&said[i]);
            i += 1;
        }
    }
    if contains_run(&said, &answer) && claim.iter().all(|w| answer.contains(w)) {
        Verdict::Correct
    } else if claim.is_empty() {
        Verdict::NoClaim
    } else {
        Verdict::Wrong
    }
}

/// The same words, in any order.
fn same_words(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

fn contains_run(hay: &[String], needle: &[String]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

const UNITS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: &[&str] =
    &["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];

/// Lowercased words without punctuation or possessive `'s`, number words as digits.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut tens_pending = false;
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’')) {
        let w = raw.trim_matches(['\'', '’']).to_lowercase();
        let w = w.strip_suffix("'s").or_else(|| w.strip_suffix("’s")).unwrap_or(&w).to_string();
        if w.is_empty() {
            continue;
        }
        if let Some(u) = UNITS.iter().position(|&u| u == w) {
            // "twenty one" / "twenty-one" = 21.
            if tens_pending && (1..10).contains(&u) {
                let t: usize = out.pop().and_then(|t| t.parse().ok()).unwrap_or(0);
                out.push((t + u).to_string());
            } else {
                out.push(u.to_string());
            }
            tens_pending = false;
            continue;
        }
        if let Some(t) = TENS.iter().position(|&t| !t.is_empty() && t == w) {
            out.push((t * 10).to_string());
            tens_pending = true;
            continue;
        }
        tens_pending = false;
        out.push(w);
    }
    out
}

const ABSTENTIONS: &[&str] = &[
    "i do not know",
    "i don't know",
    "i dont know",
    "i am not sure",
    "i'm not sure",
    "i cannot tell",
];

fn is_abstention(response: &str) -> bool {
    let lower = response.to_lowercase();
    ABSTENTIONS.iter().any(|a| lower.contains(a))
}

const RUDE: &[&str] = &[
    "stupid",
    "dumb",
    "idiot",
    "shut up",
    "whatever",
    "go away",
    "boring question",
    "who cares",
    "leave me alone",
    "figure it out yourself",
    "hate you",
    "ugh",
    "duh",
];

/// Words (not counting the ones a greeting adds) a response may use before it rambles.
fn word_budget(prompt: &str, checkable: bool) -> usize {
    let lower = prompt.to_lowercase();
    if checkable {
        20
    } else if ["tell me", "story", "who is", "what do you know", "what is", "like?"]
        .iter()
        .any(|k| lower.contains(k))
    {
        60
    } else {
        30
    }
}

#[derive(PartialEq)]
enum Social {
    Greeting,
    Thanks,
    Bye,
    None,
}

fn social(prompt: &str) -> Social {
    let w = words(prompt);
    let has = |s: &str| w.iter().any(|x| x == s);
    if has("thank") || has("thanks") {
        Social::Thanks
    } else if has("bye")
        || has("goodbye")
        || (has("good") && has("night"))
        || (has("see") && has("later"))
    {
        Social::Bye
    } else if has("hello")
        || has("hi")
        || has("hey")
        || (has("how") && has("are") && has("you"))
        || has("morning")
        || has("afternoon")
        || has("evening")
    {
        Social::Greeting
    } else {
        Social::None
    }
}

/// Words of the prompt that say what it is about: tinyworld names and things, and numbers.
fn topic_words(prompt: &str) -> Vec<String> {
    words(prompt).into_iter().filter(|w| is_number(w) || POOLS.iter().any(|p| p(w))).collect()
}

/// Higher is better; 0 is a plain, adequate answer.
fn style(prompt: &str, checkable: bool, response: &str) -> i64 {
    let text = response.trim();
    if text.is_empty() {
        return -100;
    }
    let said = words(text);
    // Phrases are matched on whole words ("ugh" is not in "enough").
    let joined = format!(" {} ", said.join(" "));
    let says = |phrase: &str| joined.matches(&format!(" {phrase} ")).count() as i64;
    let mut score = 0i64;

    // On topic: mentions what the prompt is about.
    let topic = topic_words(prompt);
    if !topic.is_empty() {
        let hit = topic.iter().filter(|t| said.contains(t)).count();
        score += if hit == topic.len() {
            2
        } else if hit > 0 {
            1
        } else {
            -2
        };
    }

    // Polite: no rude words; greetings, thanks and goodbyes answered in kind.
    score -= 15 * RUDE.iter().map(|r| says(r)).sum::<i64>();
    let answered_in_kind = |keys: &[&str]| keys.iter().any(|k| says(k) > 0);
    score += match social(prompt) {
        Social::Greeting
            if answered_in_kind(&[
                "hello",
                "hi",
                "good morning",
                "good afternoon",
                "good evening",
                "very well",
                "how can i help",
            ]) =>
        {
            2
        }
        Social::Thanks if answered_in_kind(&["welcome", "glad", "happy to help"]) => 2,
        Social::Bye if answered_in_kind(&["bye", "goodbye", "good night", "see you"]) => 2,
        Social::None => 0,
        _ => -2,
    };

    // Complete: a sentence that starts and ends like one.
    if !text.ends_with(['.', '!', '?']) {
        score -= 3;
    }
    if !text.starts_with(|c: char| c.is_uppercase() || c.is_ascii_digit()) {
        score -= 1;
    }

    // Short enough: one point off per five words over the budget.
    let budget = word_budget(prompt, checkable);
    if said.len() > budget {
        score -= (said.len() - budget).div_ceil(5) as i64;
    }

    // No repetition: repeated sentences, repeated three-word phrases, doubled words.
    let mut sentences: BTreeMap<String, usize> = BTreeMap::new();
    for s in
        text.to_lowercase().split(['.', '!', '?', '\n']).map(str::trim).filter(|s| !s.is_empty())
    {
        *sentences.entry(s.to_string()).or_default() += 1;
    }
    score -= 3 * sentences.values().map(|&n| n as i64 - 1).sum::<i64>();
    let mut trigrams: BTreeMap<&[String], usize> = BTreeMap::new();
    for t in said.windows(3) {
        *trigrams.entry(t).or_default() += 1;
    }
    score -= trigrams.values().map(|&n| n as i64 - 1).sum::<i64>().min(10);
    score -= said.windows(2).filter(|p| p[0] == p[1]).count() as i64;
    score
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(prompt: &str, answer: Option<&str>, candidates: &[&str]) -> Vec<usize> {
        let c: Vec<String> = candidates.iter().map(|s| s.to_string()).collect();
        rank(prompt, answer, &c)
    }

    #[test]
    fn words_normalise_case_possessives_and_number_words() {
        assert_eq!(words("Tom's ball is RED."), ["tom", "ball", "is", "red"]);
        assert_eq!(words("Twenty-one, twelve and 7!"), ["21", "12", "and", "7"]);
        assert_eq!(words("thirty"), ["30"]);
    }

    #[test]
    fn grade_checks_the_answer_not_the_restatement() {
        let rec = json!({ "prompt": "What is 7 plus 5?", "answer": "12" });
        assert_eq!(grade(&rec, "7 plus 5 is 12."), Some(true));
        assert_eq!(grade(&rec, "It is twelve."), Some(true));
        assert_eq!(grade(&rec, "7 plus 5 is 13."), Some(false));
        assert_eq!(
            grade(&rec, "7 plus 5 is 12 or 13."),
            Some(false),
            "hedging between answers is wrong"
        );
        assert_eq!(grade(&rec, "7 plus 5 is 125."), Some(false));
        assert_eq!(grade(&rec, ""), Some(false));
        assert_eq!(
            grade(&rec, "7 plus 5 is 12. 7 plus 5 is 12."),
            Some(true),
            "repetitive, but right"
        );
        let take = json!({ "prompt": "What do you get when you take 3 from 9?", "answer": "6" });
        assert_eq!(grade(&take, "9 minus 3 is 6."), Some(true));
        assert_eq!(grade(&take, "9 minus 3 is 9."), Some(false));
        let zero = json!({ "prompt": "What is 5 plus 0?", "answer": "5" });
        assert_eq!(grade(&zero, "5 plus 0 is 5."), Some(true));
        assert_eq!(
            grade(&zero, "5 plus 0 is 0."),
            Some(false),
            "saying 5 only as part of the question is not answering 5"
        );
        assert_eq!(grade(&zero, "It is 5."), Some(true));
        assert_eq!(grade(&zero, "It is 0."), Some(false));
        let colour = json!({ "prompt": "What colour is Tom's ball?", "answer": "red" });
        assert_eq!(grade(&colour, "Tom's ball is red."), Some(true));
        assert_eq!(grade(&colour, "Tom's ball is Red!"), Some(true));
        assert_eq!(grade(&colour, "Tom's ball is blue."), Some(false));
        assert_eq!(grade(&colour, "Tom's ball is red and blue."), Some(false));
        assert_eq!(grade(&colour, "Tom has a ball."), Some(false));
        let count = json!({ "prompt": "Count from 3 to 7.", "answer": "3, 4, 5, 6, 7" });
        assert_eq!(grade(&count, "Sure! 3, 4, 5, 6, 7."), Some(true));
        assert_eq!(grade(&count, "3, 4, 6, 7."), Some(false));
        assert_eq!(grade(&count, "3, 4, 5, 6, 7, 8."), Some(false));
        let yes_no = json!({ "prompt": "Does Tom have a kite?", "answer": "no" });
        assert_eq!(grade(&yes_no, "No, Tom does not have a kite."), Some(true));
        assert_eq!(grade(&yes_no, "Yes, Tom has a red kite."), Some(false));
        let friend = json!({ "prompt": "Who is Tom's best friend?", "answer": "Anna" });
        assert_eq!(grade(&friend, "Tom's best friend is Anna."), Some(true));
        assert_eq!(grade(&friend, "Tom's best friend is Ben."), Some(false));
        assert_eq!(grade(&json!({ "prompt": "Hello!" }), "Hello!"), None);
        assert_eq!(grade(&json!({ "prompt": "Hello!", "answer": null }), "Hello!"), None);
    }

    #[test]
    fn rank_puts_correct_complete_polite_answers_first() {
        let got = order(
            "What is 7 plus 5?",
            Some("12"),
            &[
                "7 plus 5 is 13.",                                 // 0: wrong
                "12",                                              // 1: right, terse, unfinished
                "I do not know.",                                  // 2: honest
                "Shut up. 7 plus 5 is 12.",                        // 3: right but rude
                "7 plus 5 is 12.",                                 // 4: ideal
                "7 plus 5 is 12. 7 plus 5 is 12. 7 plus 5 is 12.", // 5: right, repetitive
                "",                                                // 6: nothing
            ],
        );
        assert_eq!(got, vec![4, 1, 5, 3, 2, 0, 6]);
    }

    #[test]
    fn rank_prefers_answering_the_question_asked() {
        let got = order(
            "What colour is Tom's ball?",
            Some("red"),
            &[
                "Tom lives in Millbrook.", // 0: off the question: no colour at all
                "Tom's ball is red.",      // 1: ideal
                "Red.",                    // 2: right, but does not say what is red
                "Tom's ball is blue.",     // 3: wrong
            ],
        );
        assert_eq!(got, vec![1, 2, 0, 3]);
    }

    #[test]
    fn rank_without_an_answer_judges_style() {
        let got = order(
            "Hello!",
            None,
            &[
                "Tom lives in Millbrook and Tom lives in Millbrook and Tom lives in Millbrook", // 0
                "Hello! How can I help you today?",                                             // 1
                "what",                                                                         // 2
                "Whatever.",                                                                    // 3
            ],
        );
        assert_eq!(got, vec![1, 2, 0, 3]);
        let story = order(
            "Tell me a short story about Tom.",
            None,
            &[
                "One day, Tom went to Oakvale with Rex the dog. In the evening, Tom went home.",
                "One day, a cat sat down.",
                "One day, Tom went to Oakvale. One day, Tom went to Oakvale. One day, Tom went to Oakvale.",
            ],
        );
        assert_eq!(story, vec![0, 1, 2]);
    }

    #[test]
    fn rank_groups_tie_equal_scores() {
        let c: Vec<String> = ["2 plus 2 is 4.", "2 plus 2 is 5.", "2 plus 2 is 4.", "4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            rank_groups("What is 2 plus 2?", Some("4"), &c),
            vec![vec![0, 2], vec![3], vec![1]]
        );
        let flat: Vec<usize> = rank_groups("What is 2 plus 2?", Some("4"), &c).concat();
        assert_eq!(flat, rank("What is 2 plus 2?", Some("4"), &c));
    }

    #[test]
    fn rank_is_deterministic_and_ties_keep_input_order() {
        let same = order(
            "What is 2 plus 2?",
            Some("4"),
            &["2 plus 2 is 4.", "2 plus 2 is 4.", "2 plus 2 is 4."],
        );
        assert_eq!(same, vec![0, 1, 2]);
        let c = ["4", "2 plus 2 is 5.", "2 plus 2 is 4."];
        assert_eq!(
            order("What is 2 plus 2?", Some("4"), &c),
            order("What is 2 plus 2?", Some("4"), &c)
        );
        assert!(order("Hi", None, &[]).is_empty());
    }
}
