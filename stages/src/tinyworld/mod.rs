//! tinyworld: the bundled data of the default pipeline, generated in code from the seed (no
//! download), and its rule labeler. Entry points: [`dataset`], [`grade`], [`rank`].
//!
//! # The world
//!
//! A seed picks a [`World`](world::World) from fixed pools: 30 people (out of 60 names), each
//! living in one of 8 towns (each town known for one landmark: a big river, an old mill, ...),
//! with one pet (a dog, cat, duck, horse, pig, hen, frog or mouse, with its own name), three
//! objects of given colours (ball, hat, kite, ... in red, blue, ...), a number (2 to 12) of
//! one countable thing (apples, marbles, ...), an age (5 to 60), a favourite colour and food,
//! and a best friend (mutual). Fixed for every seed: animal facts (legs, sounds), colours of
//! common things (the sky is blue), addition and subtraction with operands 0 to 20, counting
//! and the numbers after and before 0 to 50, and word problems about nameless people
//! ("a girl has 3 shells and finds 4 more").
//!
//! # The datasets
//!
//! - `pretrain`: 12,000 `{"text"}` documents (about 2.5 MB) stating the facts in several surface
//!   forms: profiles, short stories with dialogue, towns, animals, sums, counting, colours and
//!   word problems. Every fact is stated many times, in many documents. About half of the
//!   documents are arithmetic (sums, counting, word problems), as about half of the questions
//!   are: each of the 441 sums is a fact of its own to learn.
//! - `chat`: about 1,400 `{"messages": [user, assistant]}` conversations: questions about the world and
//!   their ideal responses, greetings, thanks and goodbyes, "tell me about ...", short
//!   stories, and questions about people who are not in the world.
//! - `prompts`: about 400 `{"prompt", "answer"?}` records: a seeded quarter of all questions, held out
//!   of `chat` entirely (no phrasing of them is in `chat`), with the short checkable answer
//!   when there is one ("12", "red", "Millbrook", "yes", "3, 4, 5"). For evaluation.
//! - `rl-prompts`: about 1,250 records of the same form, for the RLHF stages (sampling,
//!   ranking, PPO): every question that is not held out, in one phrasing each. A seeded fifth
//!   of them is taken out of `chat` (the fine-tuned model never saw them answered); the rest are
//!   chat questions asked again. No held-out question is in it, so RLHF never trains on an
//!   evaluation question.
//!
//! The facts of held-out questions are still in `pretrain`, and sums cover a 21 x 21 table:
//! a ~1M-parameter model learns the chat format and many facts but not all of them, and has to
//! carry facts from pretraining text into answers it was never shown, which leaves room for
//! RLHF to improve accuracy.
//!
//! # The response style
//!
//! The ideal response is one complete, polite sentence that restates what was asked and gives
//! the exact answer: "What colour is Tom's ball?" gets "Tom's ball is red.", "What is 7 plus
//! 5?" gets "7 plus 5 is 12.". Requests ("Can you ...", "Please ...") start with "Sure!".
//! Greetings are greeted back with an offer to help, thanks are welcomed, goodbyes returned.
//! "Tell me about ..." gets two to four true sentences; a story, three. A question about
//! someone or something that is not in the world is answered honestly ("Tom does not have a
//! kite. Tom has ...", "I am sorry, but I do not know anyone called Zed."). No rambling, no
//! repetition. The labeler ([`rank`]) prefers exactly this.

mod labeler;
mod questions;
pub(crate) mod rng;
mod text;
mod world;

pub use labeler::{grade, rank, rank_groups};

use serde_json::{Value, json};

/// The names [`dataset`] knows.
pub const DATASETS: [&str; 4] = ["pretrain", "chat", "prompts", "rl-prompts"];

/// The records of one tinyworld dataset (`pretrain`, `chat`, `prompts` or `rl-prompts`, see the
/// module doc),
/// generated from `seed`; `None` for an unknown name. The same seed gives the same records.
pub fn dataset(name: &str, seed: u64) -> Option<Vec<Value>> {
    let w = world::World::new(seed);
    Some(match name {
        "pretrain" => text::documents(&w, seed).into_iter().map(|t| json!({ "text": t })).collect(),
        "chat" => questions::chat(&w, seed),
        "prompts" => questions::prompts(&w, seed),
        "rl-prompts" => questions::rl_prompts(&w, seed),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
