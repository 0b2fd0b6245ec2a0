"""The corpus's word lists. Names and objects are many and arbitrary on purpose: a model can only predict
which one comes next by finding where the story introduced it, which is what the recall probes measure."""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FEMALE_NAMES = _words("""
Ada Alba Alice Alma Amara Amelia Anika Anna Ava Bea Bella Beth Bianca Brynn Calla Cara Celia Chloe Clara Cora
Daisy Dana Delia Dora Edie Elena Eliza Ella Elsa Emma Esme Eva Faye Fern Fiona Flora Freya Gemma Greta Gwen
Hana Hazel Heidi Helga Hilda Ida Ilse Ines Iris Isla Ivy Jana Jade Jill Joan Julia June Kara Kate Kira Lana
Lara Laura Lea Leila Lena Lily Lina Lisa Liv Lola Lucy Luna Lyra Mabel Maia Mara Maren Marta Maud Maya Mei
Mila Mina Mira Molly Nadia Nell Nina Noor Nora Nova Olga Olive Opal Paula Pearl Petra Pia Poppy Quinn Rana
Rhea Rita Rosa Rose Ruby Ruth Sadie Sara Selma Siri Sofia Stella Suki Tara Tess Thea Tilda Una Vera Vida
Viola Wanda Willa Wren Yara Yuki Zara Zoe Zelda Agnes Bridget Carmen Dagny Edith Frida Gilda Harriet Imogen Adelaide Beatrix Cecily Dorothea Eloise Florence Genevieve Henrietta Isadora Josephine Katarina Leonora Margery Nerissa Ophelia Penelope Rosalind Seraphina Theodora Ursula Valentina Winifred Anastasia Bernadette Clementine Delphine Evangeline Felicity Georgina Hortensia Jacqueline Lavinia Marigold Octavia Philippa Rowena Sabine Temperance Veronica Wilhelmina Ysolde Zinnia
""")
MALE_NAMES = _words("""
Aaron Abel Adam Alan Albert Alec Alfie Amos Anton Arlo Arthur Axel Basil Ben Bert Boris Bruno Caleb Carl
Cedric Cyrus Dario Dean Declan Dmitri Eli Elias Anselm Barnaby Casimir Desmond Ambrose Benedict Clement Dorian Ernest Florian Godfrey Hector Lucian Maximilian Norbert Osgood Ptolemy Reginald Thaddeus Ulric Valentin Wendell Alistair Bartholomew Cornelius Evander Fitzgerald Gunther Hamish Ingmar Jeremiah Leopold Montague Nikolai Oswald Percival Rodrigo Sylvester Tiberius Vaughn Wolfgang Ximeno Yannick Zebedee Emil Enzo Eric Ezra Felix Finn Frank Fritz Gabe Gideon Gus
Hans Harry Henry Hugo Ian Igor Isaac Ivan Jack Jacob Jasper Jonas Jude Kai Karl Kenji Kurt Lars Leo Leon Levi
Liam Louis Luca Luke Magnus Marco Marius Max Milo Moses Nate Ned Nico Niels Noah Odin Olaf Oliver Omar Oscar
Otto Owen Pablo Paul Pedro Percy Peter Quentin Rafael Ravi Reid Remy Rex Rohan Rufus Rupert Sam Silas Simon
Soren Stefan Theo Tobias Tom Uri Victor Viktor Walter Wes Wilbur Will Xavier Yusuf Zane Ansel Bjorn Cosmo
Dexter Edgar Fabian Gregor Horace Ignatius Jerome Lionel Mortimer Neville Orson Phineas Roland Sebastian
""")
ROLES = _words("""
baker fisherman painter sailor farmer weaver potter tailor miller blacksmith carpenter shepherd beekeeper
gardener librarian teacher doctor nurse pilot captain merchant cook juggler singer dancer poet inventor
clockmaker glassblower cobbler mapmaker astronomer guard knight wizard witch scholar student hunter ranger
woodcutter miner jeweler musician drummer fiddler storyteller mason brewer cheesemaker candlemaker
bookbinder postman sheriff mayor judge acrobat clown porter innkeeper florist butcher hatter locksmith
ferryman lighthouse-keeper
""")
PERSON_ADJECTIVES = _words("""
young old tall short quiet clever brave shy kind grumpy cheerful curious careful gentle proud patient truthful
restless sleepy wise merry famous generous polite strict thoughtful daring jolly gloomy modest silly stubborn friendly nervous bold humble lonely busy tired lively calm
""")
OBJECTS = _words("""
lantern kite map flute compass violin umbrella basket hammer necklace ring bracelet locket scarf hat boot
shovel bucket ladder rope candle mirror clock watch key coin purse wallet diary notebook pencil brush paint
spoon ladle kettle teapot cup bowl plate jar bottle box chest trunk bag satchel backpack blanket pillow
quilt shawl cloak coat glove mitten sock ribbon button needle thread spindle wheel cart wagon sled boat oar
net fishing-rod hook lamp torch telescope magnifier feather pebble shell acorn pinecone crown sword shield
bow arrow spear drum horn harp bell whistle trumpet banjo puzzle marble doll puppet ball top yo-yo kazoo
camera radio letter postcard ticket parcel envelope badge medal trophy statue vase pot pan rake hoe axe saw
chisel wrench lock chain anchor saddle bridle collar leash broom mop sponge towel soap comb
""")
OBJECT_ADJECTIVES = _words("""
red blue green yellow purple orange silver golden black white brown grey pink copper wooden woollen
leather painted striped spotted tiny huge shiny dusty battered polished heavy light crooked broken new
ancient glass paper velvet
""")
PLACES = _words("""
quarry dock pier glade grove heath moor ridge summit hollow creek fjord lagoon oasis plateau riverbank courtyard greenhouse barn stable 
village town city harbor valley forest meadow island mountain river lake desert swamp marsh orchard
vineyard farm castle tower market square bridge mill garden park library school bakery workshop tavern
inn cottage cabin palace temple station lighthouse cave canyon beach cliff hill field pond stream bay
""")
PLACE_ADJECTIVES = _words("""
small busy sleepy foggy sunny windy snowy rainy green rocky dusty noisy peaceful hidden faraway crowded
""")
ANIMALS = _words("""
kitten puppy lamb calf chick duckling raven magpie pigeon parrot peacock swallow woodpecker kingfisher salmon trout newt mole shrew weasel ferret camel 
cat dog fox owl crow sparrow robin goose duck swan heron hawk eagle rabbit hare mouse rat squirrel badger
hedgehog otter beaver deer horse pony donkey goat sheep cow pig frog toad turtle snail beetle bee butterfly
moth spider lizard snake bat wolf bear lynx seal whale dolphin crab lobster
""")
FOODS = _words("""
toast waffles dumplings pasta pudding custard tarts scones crackers olives radishes spinach lettuce cucumbers melons peaches apricots raisins almonds walnuts chestnuts pumpkins leeks garlic 
bread cheese apples pears plums cherries soup stew porridge honey jam butter eggs milk tea cocoa pie cake
biscuits cookies muffins pancakes noodles rice beans carrots potatoes onions turnips cabbage peas corn
mushrooms berries grapes oranges lemons figs dates nuts sausages fish pickles
""")
SCENERY_NOUNS = _words("""
sun moon stars clouds wind rain snow fog mist sky sea waves tide leaves branches roots grass flowers weeds
stones sand dust smoke chimney roofs windows doors gates fences walls path road lane street alley steps
""")
FEELINGS = _words("""
cheerful anxious curious delighted embarrassed furious homesick impatient joyful miserable peaceful thankful uneasy 
happy sad angry afraid excited worried surprised proud ashamed hopeful glad calm puzzled amazed bored
grateful jealous lonely relieved cross
""")
WEATHER = (
    "it was raining softly", "the sky was clear and blue", "a cold wind blew from the north",
    "thick fog rolled in from the sea", "snow fell all morning", "the sun was hot and bright",
    "thunder rumbled far away", "a light drizzle was falling", "the air smelled of rain",
    "the clouds hung low and grey", "it was a warm and still evening", "frost covered every window",
)
TIMES = _words("""
morning afternoon evening night dawn dusk noon midnight spring summer autumn winter Monday Tuesday
Wednesday Thursday Friday Saturday Sunday
""")
SOUNDS = _words("""
tapping clattering purring croaking hooting roaring 
howling singing whistling barking chirping knocking ringing rustling splashing humming buzzing creaking
""")
VERBS_PAST = _words("""
tiptoed galloped paddled stumbled wobbled hopped scrambled trudged dashed lingered paused knelt bowed stretched yawned giggled chuckled grumbled coughed sneezed shivered blushed winked blinked peeked stared glanced gazed pondered hesitated practised studied tidied polished scrubbed hammered stitched sketched carved gathered harvested planted watered fed chased followed explored 
walked ran hurried wandered strolled climbed jumped skipped crept marched raced drifted rowed sailed rode
swam danced sang hummed whistled laughed smiled frowned sighed shouted whispered waved nodded shrugged
listened waited watched searched looked worked rested slept dreamed remembered wondered thought planned
cooked baked painted wrote read counted cleaned swept mended sewed knitted built fixed carried pulled pushed
""")
ADVERBS = _words("""
wearily merrily steadily silently gracefully clumsily hastily lazily briskly warmly 
slowly quickly quietly loudly happily sadly carefully gently bravely softly suddenly finally eagerly calmly
proudly nervously patiently cheerfully politely boldly
""")
# Verbs that, in this corpus, always take the speaker's own object: "NAME <verb> her <object>".
OBJECT_VERBS = (
    "picked up", "held up", "looked at", "polished", "reached for", "checked", "cleaned", "showed everyone",
    "put down", "hugged", "found", "took out", "counted on", "wrapped up", "dusted off", "patted",
)
SPEECH_VERBS = _words("said asked whispered shouted called replied answered laughed cried muttered")
TREES = _words("""
oak pine birch willow maple elm ash beech cedar fir spruce poplar chestnut walnut apple-tree cherry-tree
holly hawthorn juniper cypress sycamore alder hazel-bush rowan yew larch linden magnolia olive-tree palm
""")
FLOWERS = _words("""
roses tulips daisies lilies poppies violets daffodils bluebells sunflowers marigolds lavender heather
clover thistles dandelions buttercups orchids peonies irises snowdrops foxgloves primroses cornflowers
""")
FURNITURE = _words("""
armchair sofa footstool bookcase chest-of-drawers lamp-post hatstand pantry larder 
table chair bench stool shelf cupboard wardrobe dresser bed cradle rug carpet curtain fireplace stove oven
sink counter desk cabinet hearth mantel doorstep windowsill staircase attic cellar porch balcony
""")
CLOTHES = _words("""
apron jacket sweater vest waistcoat trousers skirt dress gown tunic cap bonnet beret hood sandals slippers
clogs boots belt buckle brooch spectacles
""")
WORK_THINGS = _words("""
thimbles bobbins pegs hinges bolts shingles tiles mortar plaster varnish twine burlap canvas 
flour dough sugar salt yeast wool yarn cloth linen silk cotton clay bricks timber planks nails screws glue
wax ink parchment glassware barrels sacks crates nets sails ropes hay straw seeds soil firewood coal iron
tin brass gold silver pearls gems
""")
ACTIVITIES = _words("""
whittling sketching
fishing sailing painting singing dancing baking knitting sewing reading writing gardening building mending
climbing swimming skating juggling whistling drawing carving weaving hunting rowing hiking exploring
""")
SCENERY_ADJECTIVES = _words("""
misty frosty muddy sandy leafy mossy silent shimmering golden-brown hazy dim glowing faded 
bright dark golden pale soft sharp cold warm damp dry bitter sweet fresh stale strange familiar narrow wide
steep gentle wild tame empty full ancient tidy messy crisp smooth rough glittering gloomy shadowy sparkling
""")
