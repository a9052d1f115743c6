//! tinyworld's tests: determinism, held-out prompts, and consistency of every dataset with
//! the world, checked by an oracle written independently of the generators.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::labeler::{is_correct, words};
use super::questions::{self, Question};
use super::world::*;
use super::*;

const SEED: u64 = 1234;

fn text_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("record without `{key}`: {v}")).to_string()
}

fn user_and_assistant(v: &Value) -> (String, String) {
    let m = v["messages"].as_array().expect("messages");
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["role"], "user");
    assert_eq!(m[1]["role"], "assistant");
    (text_of(&m[0], "content"), text_of(&m[1], "content"))
}

/// The answer a question must have, found from its words and the world alone.
fn oracle(w: &World, prompt: &str) -> Option<String> {
    let t = words(prompt);
    let has = |s: &str| t.iter().any(|x| x == s);
    let nums: Vec<u32> = t.iter().filter_map(|x| x.parse().ok()).collect();
    let person = w.people.iter().position(|p| has(&p.name.to_lowercase()));
    let object = (0..OBJECTS.len()).find(|&o| has(OBJECTS[o]));
    if let Some(p) = person {
        let me = &w.people[p];
        return if has("colour") && object.is_some() {
            w.colour_of(p, object?).map(String::from)
        } else if has("colour") {
            Some(COLOURS[me.fav_colour].to_string())
        } else if has("many") {
            Some(me.count.to_string())
        } else if (has("have") || has("got")) && object.is_some() {
            Some(if w.colour_of(p, object?).is_some() { "yes" } else { "no" }.to_string())
        } else if has("live") || has("lives") {
            Some(w.places[me.place].name.to_string())
        } else if has("food") {
            Some(FOODS[me.fav_food].to_string())
        } else if has("friend") {
            Some(w.people[me.friend].name.to_string())
        } else if has("old") || has("age") {
            Some(me.age.to_string())
        } else if has("name") || has("called") {
            Some(me.pet_name.to_string())
        } else if has("pet") {
            Some(ANIMALS[me.pet_kind].kind.to_string())
        } else {
            None
        };
    }
    if let Some(place) = w.places.iter().find(|pl| has(&pl.name.to_lowercase())) {
        return (has("known") || has("find")).then(|| LANDMARKS[place.landmark].1.to_string());
    }
    if let Some(animal) = ANIMALS.iter().find(|a| has(a.kind)) {
        return if has("legs") {
            Some(animal.legs.to_string())
        } else if has("sound") || has("say") {
            Some(animal.sound.to_string())
        } else {
            None
        };
    }
    if has("colour") {
        let (_, colour) =
            THING_COLOURS.iter().find(|(thing, _)| has(thing.rsplit(' ').next().unwrap()))?;
        return Some(colour.to_string());
    }
    match nums[..] {
        [x, y] if has("finds") || has("plus") || has("add") || prompt.contains('+') => {
            Some((x + y).to_string())
        }
        [x, y] if has("gives") || has("minus") || prompt.contains(" - ") => {
            Some((x - y).to_string())
        }
        [y, x] if has("take") => Some((x - y).to_string()),
        [n] if has("after") => Some((n + 1).to_string()),
        [n] if has("before") => Some((n - 1).to_string()),
        [from, to] if has("count") => {
            Some((from..=to).map(|n| n.to_string()).collect::<Vec<_>>().join(", "))
        }
        _ => None,
    }
}

#[test]
fn same_seed_gives_identical_records_and_another_seed_another_world() {
    for name in DATASETS {
        let a = serde_json::to_string(&dataset(name, SEED).unwrap()).unwrap();
        let b = serde_json::to_string(&dataset(name, SEED).unwrap()).unwrap();
        assert_eq!(a, b, "{name} differs between two runs with one seed");
        let c = serde_json::to_string(&dataset(name, SEED + 1).unwrap()).unwrap();
        assert_ne!(a, c, "{name} ignores the seed");
    }
    assert!(dataset("pretrian", SEED).is_none());
}

#[test]
fn datasets_have_the_promised_shape_and_size() {
    let pretrain = dataset("pretrain", SEED).unwrap();
    let bytes: usize = pretrain.iter().map(|d| text_of(d, "text").len()).sum();
    assert!(
        (2_000_000..6_000_000).contains(&bytes),
        "pretrain is {bytes} bytes; a few MB was promised"
    );
    assert!(pretrain.iter().all(|d| d.as_object().unwrap().len() == 1));

    let chat = dataset("chat", SEED).unwrap();
    assert!(chat.len() > 1300, "only {} chats", chat.len());
    for c in &chat {
        let (user, assistant) = user_and_assistant(c);
        assert!(!user.is_empty() && !assistant.is_empty());
        assert!(assistant.ends_with(['.', '!', '?']), "unfinished response `{assistant}`");
    }

    let prompts = dataset("prompts", SEED).unwrap();
    let checkable = prompts.iter().filter(|p| p.get("answer").is_some()).count();
    assert!(checkable > 250, "only {checkable} checkable prompts");
    assert!(prompts.len() > checkable, "prompts without a checkable answer are missing");
    let kinds: BTreeSet<&str> = prompts
        .iter()
        .filter_map(|p| p["answer"].as_str())
        .map(|a| {
            if a.contains(", ") {
                "list"
            } else if a.parse::<u32>().is_ok() {
                "number"
            } else {
                "word"
            }
        })
        .collect();
    assert_eq!(kinds.len(), 3, "expected number, word and list answers, got {kinds:?}");
}

#[test]
fn prompts_are_held_out_of_chat() {
    let chat: BTreeSet<String> =
        dataset("chat", SEED).unwrap().iter().map(|c| user_and_assistant(c).0).collect();
    let prompts = dataset("prompts", SEED).unwrap();
    let unique: BTreeSet<String> = prompts.iter().map(|p| text_of(p, "prompt")).collect();
    assert_eq!(unique.len(), prompts.len(), "a prompt is listed twice");
    for p in &unique {
        assert!(!chat.contains(p), "held-out prompt `{p}` is in chat");
    }
}

#[test]
fn rl_questions_are_out_of_chat_and_rl_prompts_never_ask_a_held_out_question() {
    let w = World::new(SEED);
    let s = questions::split(&w, SEED);
    let phrasings =
        |qs: &[Question]| -> BTreeSet<String> { qs.iter().flat_map(|q| q.phrasings(&w)).collect() };
    let (chat, rl, held) = (phrasings(&s.chat), phrasings(&s.rl), phrasings(&s.held));
    assert!(
        rl.is_disjoint(&chat) && rl.is_disjoint(&held) && chat.is_disjoint(&held),
        "a question is in two splits"
    );
    let records = dataset("rl-prompts", SEED).unwrap();
    assert_eq!(records.len(), s.chat.len() + s.rl.len(), "one rl-prompt per question not held out");
    assert!(
        records.iter().filter(|p| p.get("answer").is_some()).count() > 800,
        "too few checkable rl-prompts"
    );
    for p in &records {
        let prompt = text_of(p, "prompt");
        assert!(
            rl.contains(&prompt) || chat.contains(&prompt),
            "rl-prompt `{prompt}` is neither an RL nor a chat question"
        );
        assert!(!held.contains(&prompt), "rl-prompt `{prompt}` is a held-out question");
    }
    // Every question is in one split, and the held-out draw alone decides the evaluation set.
    let all = questions::all(&w, SEED);
    assert_eq!(s.chat.len() + s.rl.len() + s.held.len(), all.len());
    let mut r = super::rng::Rng::fork(SEED, "held-out");
    let held_alone: Vec<Question> = all.into_iter().filter(|_| r.percent(25)).collect();
    assert_eq!(phrasings(&held_alone), held);
}

#[test]
fn every_checkable_prompt_answer_follows_from_the_world() {
    let w = World::new(SEED);
    let mut prompts = dataset("prompts", SEED).unwrap();
    prompts.extend(dataset("rl-prompts", SEED).unwrap());
    for p in &prompts {
        let prompt = text_of(p, "prompt");
        let answer = p.get("answer").map(|a| a.as_str().expect("answer is a string").to_string());
        assert_eq!(oracle(&w, &prompt), answer, "prompt `{prompt}`");
    }
}

#[test]
fn every_chat_response_is_correct_and_ranked_first() {
    let w = World::new(SEED);
    let mut checked = 0;
    for c in dataset("chat", SEED).unwrap() {
        let (user, ideal) = user_and_assistant(&c);
        let answer = oracle(&w, &user);
        if let Some(answer) = &answer {
            assert!(
                is_correct(&user, answer, &ideal),
                "`{user}` -> `{ideal}` does not say `{answer}`"
            );
            checked += 1;
        }
        let candidates =
            vec![format!("{ideal} {ideal}"), "I do not know.".to_string(), ideal.clone()];
        assert_eq!(
            rank(&user, answer.as_deref(), &candidates)[0],
            2,
            "`{user}`: the ideal `{ideal}` is not ranked first"
        );
    }
    assert!(checked > 1000, "only {checked} checkable chats");
}

#[test]
fn every_phrasing_of_every_question_is_graded_correct_on_its_ideal_response() {
    let w = World::new(SEED);
    let mut r = super::rng::Rng::new(0);
    for q in questions::all(&w, SEED) {
        let Some(answer) = q.answer(&w) else { continue };
        for phrasing in q.phrasings(&w) {
            let response = q.response(&w, &phrasing, &mut r);
            let record = serde_json::json!({ "prompt": phrasing, "answer": answer });
            assert_eq!(
                grade(&record, &response),
                Some(true),
                "{q:?}: `{phrasing}` -> `{response}`"
            );
            assert_eq!(
                oracle(&w, &phrasing).as_deref(),
                Some(answer.as_str()),
                "{q:?}: `{phrasing}`"
            );
        }
    }
}

/// Every sentence of `pretrain` in a known factual form agrees with the world.
#[test]
fn pretrain_text_agrees_with_the_world() {
    let w = World::new(SEED);
    let person = |s: &str| w.people.iter().find(|p| p.name.to_lowercase() == s);
    let place_name = |i: usize| w.places[i].name.to_lowercase();
    let num = |s: &str| s.parse::<u32>().ok();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for doc in dataset("pretrain", SEED).unwrap() {
        let text = text_of(&doc, "text");
        // Quoted dialogue restates facts in the first person; the facts are checked elsewhere.
        let text: String = text.split('"').step_by(2).collect();
        for sentence in text.split(['.', '!', '?']) {
            let t = words(sentence);
            let t: Vec<&str> = t.iter().map(String::as_str).collect();
            let (shape, ok) = match t[..] {
                [x, "plus", y, "is", z] => {
                    ("sum", num(x).unwrap() + num(y).unwrap() == num(z).unwrap())
                }
                ["if", "you", "add", x, "and", y, "you", "get", z] => {
                    ("sum", num(x).unwrap() + num(y).unwrap() == num(z).unwrap())
                }
                [x, "minus", y, "is", z] => {
                    ("difference", num(x).unwrap() - num(y).unwrap() == num(z).unwrap())
                }
                ["if", "you", "take", y, "from", x, "you", "get", z] => {
                    ("difference", num(x).unwrap() - num(y).unwrap() == num(z).unwrap())
                }
                ["after", n, "comes", m] | ["the", "number", "after", n, "is", m] => {
                    ("after", num(n).unwrap() + 1 == num(m).unwrap())
                }
                ["before", n, "comes", m] => ("before", num(n).unwrap() - 1 == num(m).unwrap()),
                [p, "lives", "in", x]
                | [p, "lives", "in", "the", "town", "of", x]
                | [p, "home", "is", "in", x]
                    if person(p).is_some() =>
                {
                    ("home", place_name(person(p).unwrap().place) == x)
                }
                [p, "is", n, "years", "old"] => ("age", person(p).unwrap().age == num(n).unwrap()),
                [p, "favourite", "colour", "is", c] => {
                    ("favourite colour", COLOURS[person(p).unwrap().fav_colour] == c)
                }
                [p, "favourite", "food", "is", f] => {
                    ("favourite food", FOODS[person(p).unwrap().fav_food] == f)
                }
                [p, "best", "friend", "is", q] => {
                    ("friend", w.people[person(p).unwrap().friend].name.to_lowercase() == q)
                }
                [p, "has", n, items] if num(n).is_some() => ("count", {
                    let me = person(p).unwrap();
                    me.count == num(n).unwrap() && COUNTABLES[me.countable].1 == items
                }),
                [p, "has", "a" | "an", kind, "called", name] => ("pet", {
                    let me = person(p).unwrap();
                    ANIMALS[me.pet_kind].kind == kind && me.pet_name.to_lowercase() == name
                }),
                [p, o, "is", c] if person(p).is_some() && OBJECTS.contains(&o) => {
                    let me = w.people.iter().position(|x| x.name.to_lowercase() == p).unwrap();
                    (
                        "object colour",
                        w.colour_of(me, OBJECTS.iter().position(|x| *x == o).unwrap()) == Some(c),
                    )
                }
                [p, "has" | "took", "a" | "an" | "the", c, o]
                    if person(p).is_some() && OBJECTS.contains(&o) =>
                {
                    let me = w.people.iter().position(|x| x.name.to_lowercase() == p).unwrap();
                    (
                        "object colour",
                        w.colour_of(me, OBJECTS.iter().position(|x| *x == o).unwrap()) == Some(c),
                    )
                }
                ["a" | "an", kind, "has", n, "legs"] if num(n).is_some() => (
                    "legs",
                    ANIMALS.iter().find(|a| a.kind == kind).unwrap().legs == num(n).unwrap(),
                ),
                ["a" | "an", kind, "says", s] => {
                    ("sound", ANIMALS.iter().find(|a| a.kind == kind).unwrap().sound == s)
                }
                ["let", "us", "count", "from", a, "to", b, ref rest @ ..] => ("counting", {
                    let want: Vec<String> =
                        (num(a).unwrap()..=num(b).unwrap()).map(|n| n.to_string()).collect();
                    rest.iter().map(|s| s.to_string()).collect::<Vec<_>>() == want
                }),
                _ => continue,
            };
            assert!(ok, "pretrain says `{}`, which is not so in the world", sentence.trim());
            *checked.entry(shape).or_default() += 1;
        }
    }
    for shape in [
        "sum",
        "difference",
        "after",
        "before",
        "home",
        "age",
        "favourite colour",
        "favourite food",
        "friend",
        "count",
        "pet",
        "object colour",
        "legs",
        "sound",
        "counting",
    ] {
        assert!(
            checked.get(shape).copied().unwrap_or(0) >= 20,
            "few `{shape}` sentences checked: {checked:?}"
        );
    }
}
